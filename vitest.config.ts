import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: [
      'spec/**/*.test.ts',
      'impl/**/*.test.ts',
      'model/**/*.test.ts',
      'simulator/**/*.test.ts',
      'cli/**/*.test.ts',
      'vectors/**/*.test.ts',
      'test/**/*.test.ts',
      'tools/**/*.test.ts',
      'viz/**/*.test.ts',
    ],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
