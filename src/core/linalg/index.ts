export * from './eigen';
export * from './dense';
export * from './cholesky';
