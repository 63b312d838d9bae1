// Lint rules: typescript-eslint's recommended set plus the house rules from CONTRIBUTING.md that a
// linter can see (no `any`, no ts-ignore, no non-null assertions in protocol code).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'node_modules/',
      'docs/api/',
      'dist/',
      'coverage/',
      'vectors/*.new.json',
      'viz/dist/',
      'viz/fixtures/',
      'viz/screenshots/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/ban-ts-comment': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['spec/**/*.ts', 'impl/**/*.ts', 'model/**/*.ts', 'simulator/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'error',
    },
  },
);
