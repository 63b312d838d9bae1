/**
 * Module types for what Vite resolves at build time: `?raw` imports are the file's text.
 * @module
 */
declare module '*?raw' {
  const text: string;
  export default text;
}

declare module '*.css';
