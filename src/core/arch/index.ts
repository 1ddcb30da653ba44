export * from './layout';
export * from './adapters';
export * from './heads';
