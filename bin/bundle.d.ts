// Types of bin/bundle.js (plain JavaScript: it runs before any TypeScript can).
export declare const BUNDLES: string;
export declare function sourceKey(): string;
export declare function entryPoints(files?: string[]): Record<string, string>;
export declare function bundledEntry(required?: boolean): Promise<string | undefined>;
