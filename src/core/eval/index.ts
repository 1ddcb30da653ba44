export * from './protocol';
export * from './tokenize';
export * from './model';
export * from './graph';
export * from './forward';
export * from './factored';
export * from './evaluate';
