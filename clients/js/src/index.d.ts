// Types of @collective-memory/client (src/index.js).

export type TransportName = 'websocket' | 'polling' | 'sse' | 'poll';

/** One journal event, as every transport delivers it. */
export interface Envelope<D = any> {
  id: number;
  epoch: string;
  type: string;
  scope: string;
  ts: string;
  data: D;
  publisher?: { user?: string; local?: boolean };
}

export interface Cursor {
  epoch: string | null;
  id: number;
}

/** What a client should do about a server's code (see `CODES`). */
export type Action = 'retry' | 'reauthenticate' | 'resync' | 'give_up';

export interface ConnectionState {
  /** `failed`: the server said trying again cannot help (its code's action is `give_up`); `reconnect()` starts again. */
  state: 'connecting' | 'connected' | 'reconnecting' | 'offline' | 'failed' | 'closed';
  /** The transport in use, or the one the next attempt will use. */
  transport: TransportName | null;
  /** The node in use, or the one the next attempt will use. */
  node: string;
  /** Attempts since the last stable connection. */
  attempt: number;
  /** Delay before the next attempt (`reconnecting`), in ms. */
  delay_ms: number;
  /** Why the last connection ended or failed (`code`: unauthorized, forbidden, timeout, stalled, closed, transport, http_NNN, or the server's close reason). */
  error: {
    code: string;
    message: string;
    transport: TransportName | null;
    /** The server's code, when it gave one (`token_revoked`, `forbidden`, `server_shutdown`…; see `CODES`). */
    reason?: string;
    /** What that code asks for; absent when the server said nothing (a network failure, a proxy). */
    action?: Action;
  } | null;
  /** Set when the client moved up to a better transport. */
  upgraded_from?: TransportName;
  /** `Date.now()` when the state was entered. */
  at: number;
}

export interface Storage {
  load(): { cursor?: string | null; transport?: TransportName } | null;
  save(value: { cursor: string | null; transport: TransportName }): void;
  flush?(): void;
}

export interface Options {
  /** Bearer token (`cm_…`); none on an open loopback server. A function (sync or async) returning one is asked before the first attempt and again whenever the server's code says to reauthenticate. */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** Workspaces to receive; all of the user's when omitted. */
  workspaces?: string[] | null;
  /** Transports in order of preference. Default: websocket, polling, sse, poll. */
  transports?: TransportName[];
  /** Where the cursor and the last good transport persist: a localStorage key in browsers, a file path in Node, an object, or false (default). */
  storage?: string | Storage | false;
  /** Start after this cursor (`"<epoch>:<id>"`, `{epoch, id}` or a bare id) instead of the stored one. */
  from?: string | number | Cursor | null;
  /** Time a transport has to connect before it counts as failed (default 10000). */
  connectTimeoutMs?: number;
  /** Delays between attempts: random in [0, min(maxMs, initialMs × factor^attempt)). Defaults 500, 2, 30000. */
  backoff?: { initialMs?: number; factor?: number; maxMs?: number };
  /** A connection up this long resets the backoff; one cut sooner counts as a failure of its transport (default 10000). */
  stableAfterMs?: number;
  /** Failures of one transport in a row before the next is tried (default 2; one timeout is enough). */
  failuresBeforeFallback?: number;
  /** While on a lesser transport, how often better ones are tried (default 60000). */
  probeIntervalMs?: number;
  /** Long-poll wait of the poll transport, in seconds (default 25). */
  pollWaitS?: number;
  /** Time the server has to acknowledge a send (default 10000). */
  ackTimeoutMs?: number;
  /** The poll transport's client id (default: random per client). */
  clientId?: string | null;
  /** fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch | null;
  /** WebSocket class to use (default: the global one, or the `ws` package in Node). */
  WebSocket?: any;
}

export interface SendAck {
  ok: true;
  [key: string]: any;
}

export declare class Client {
  readonly state: ConnectionState['state'];
  /** The last event delivered, or null before the first. */
  readonly cursor: Cursor | null;
  readonly transport: TransportName;
  /** The node in use (or being tried): one of the URLs given to `connect`. */
  readonly node: string;
  /** The last 200 state changes of this client. */
  readonly history: ConnectionState[];
  on(name: 'event', fn: (envelope: Envelope) => void): this;
  on(name: 'state', fn: (state: ConnectionState) => void): this;
  on(name: 'resync', fn: (envelope: Envelope<{ reason: string; oldest_available_id: number; head_id: number }>) => void): this;
  on(name: string, fn: (envelope: Envelope) => void): this;
  once(name: string, fn: (arg: any) => void): this;
  off(name: string, fn: (arg: any) => void): this;
  /** The workspaces later connections ask for (null: all of the user's); the current one is not changed. */
  setWorkspaces(list: string[] | null): void;
  /** Resolves when connected; rejects once the client has `failed` or is closed. */
  whenConnected(): Promise<void>;
  /** Starts again after `failed` (or at once while waiting to retry), with a new token or workspaces if given. */
  reconnect(options?: { token?: Options['token']; workspaces?: string[] | null }): void;
  send(type: string, data?: Record<string, any>, options?: { scope?: string }): Promise<SendAck>;
  close(): void;
}

/** One server, or the nodes of a cluster (the client moves to the next when one is unreachable). */
export declare function connect(url: string | string[], options?: Options): Client;
export declare function backoffDelay(attempt: number, backoff?: { initialMs?: number; factor?: number; maxMs?: number }, random?: () => number): number;
export declare function parseCursor(cursor: string | number | Cursor | null | undefined): Cursor | null;
export declare const DEFAULT_TRANSPORTS: TransportName[];
/** Every refusal and close code the server sends (generated from the server's table). */
export declare const CODES: Readonly<Record<string, { status: number | null; action: Action; meaning: string }>>;
/** What to do about `code`; for a code this version does not know, what the HTTP `status` suggests. */
export declare function actionOf(code: string | null | undefined, status?: number | null): Action;
