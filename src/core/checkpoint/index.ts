export * from './dtypes';
export * from './safetensors';
export * from './fileAccess';
export * from './checkpoint';
