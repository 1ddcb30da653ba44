export * from './basis';
