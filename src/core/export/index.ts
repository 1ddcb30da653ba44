export * from './format';
export * from './destination';
export * from './rewrite';
export * from './writer';
export * from './export';
export * from './load';
export * from './runtime';
