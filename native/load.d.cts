declare function loadNative():
  | { binding: typeof import('./binding.cjs'); error: null }
  | { binding: null; error: unknown };
export = loadNative;
