export * from './eigen';
export * from './dense';
