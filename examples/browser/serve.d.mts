// Types of serve.mjs for the TypeScript tests that start it.
export declare const REPO_ROOT: string;
export declare const MIME_TYPES: Record<string, string>;
export declare const ISOLATION_HEADERS: Record<string, string>;
export interface StaticServer {
  port: number;
  /** http://host:port/ */
  url: string;
  close(): Promise<void>;
}
export declare function startServer(opts?: { root?: string; port?: number; host?: string; log?: ((line: string) => void) | null }): Promise<StaticServer>;
