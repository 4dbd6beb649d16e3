// Types of taskrush-plugin (see index.cjs and docs/plugins.md).

export declare const PROTOCOL_VERSIONS: readonly number[];
export declare const MAX_LINE_BYTES: number;
export declare const ErrorCode: {
  readonly PARSE_ERROR: -32700;
  readonly INVALID_REQUEST: -32600;
  readonly METHOD_NOT_FOUND: -32601;
  readonly INVALID_PARAMS: -32602;
  readonly INTERNAL_ERROR: -32603;
  readonly VETO: -32010;
  readonly UNSUPPORTED_PROTOCOL: -32011;
  readonly PERMISSION_DENIED: -32020;
  readonly HOST_CALL_FAILED: -32021;
};

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Permission {
  kind: 'filesystem' | 'network' | 'environment' | 'process' | 'plugins' | string;
  paths?: string[];
  hosts?: string[];
  vars?: string[];
  commands?: string[];
  /** Kind `plugins`: plugins whose commands it may call through the host. */
  names?: string[];
}

export interface InitializeParams {
  protocol_versions: number[];
  taskrush_version: string;
  name: string;
  config: { [key: string]: any };
  project_root: string;
  permissions: Permission[];
  /** The host calls the host serves; `hostCall` sends no other. */
  host_methods: string[];
  [key: string]: unknown;
}

export interface TaskContext {
  task_name: string;
  command: string;
  working_dir: string;
  env_vars: { [name: string]: string };
  config: { [key: string]: any };
  run_id: number;
  [key: string]: unknown;
}

/**
 * How a task ended (`after_task`), with the SDK's defaults filled in: the
 * protocol leaves `exit_code` absent when the command did not exit by
 * itself (killed by a signal, never started, cancelled, vetoed), and `cached`
 * absent when false; handlers always see both fields.
 */
export interface TaskResult {
  status: 'success' | 'failed' | 'cancelled' | string;
  /** The command's exit code; `null` (filled in by the SDK) when the protocol left it absent. */
  exit_code: number | null;
  /**
   * Wall time of the task's process in ms: from the spawn of its shell to its
   * exit, plugin hooks and the cache check not counted.
   */
  duration_ms: number;
  /** The task was up to date and did not run (`false` when the protocol left it absent). */
  cached: boolean;
  [key: string]: unknown;
}

/** Why a task failed (`on_task_failure`), with the SDK's defaults filled in. */
export interface TaskError {
  message: string;
  /** As in `TaskResult`: `null` (filled in by the SDK) when the protocol left it absent. */
  exit_code: number | null;
  [key: string]: unknown;
}

export declare class RpcError extends Error {
  constructor(message: string, code?: number, data?: Json);
  code: number;
  data?: Json;
}

export declare class HostError extends RpcError {
  readonly permissionDenied: boolean;
}

export interface GraphTask {
  command?: string;
  description?: string;
  deps: string[];
  /** `value` only for variables the `environment` grant names. */
  env: { name: string; value?: string }[];
  sources: string[];
  outputs: string[];
  dir?: string;
  plugins: string[];
}

export interface TaskGraph {
  root: string;
  tasks: { [name: string]: GraphTask };
  edges: [string, string][];
}

export interface TaskResults {
  run_id: number;
  tasks: { task: string; status: string; exit_code?: number; duration_ms: number; cached: boolean }[];
}

export declare class Host {
  offers(method: string): boolean;
  envGet(name: string): Promise<string | null>;
  readFile(path: string): Promise<string>;
  writeFile(path: string, contents: string, options?: { append?: boolean }): Promise<number>;
  httpRequest(
    url: string,
    options?: { method?: string; headers?: { [k: string]: string }; body?: string; timeoutMs?: number },
  ): Promise<{ status: number; headers: { [k: string]: string }; body: string }>;
  runCommand(
    program: string,
    args?: string[],
    options?: { cwd?: string; stdin?: string },
  ): Promise<{ exit_code?: number; stdout: string; stderr: string }>;
  taskGraph(): Promise<TaskGraph>;
  taskResults(runId?: number): Promise<TaskResults>;
  callCommand(plugin: string, command: string, args?: string[]): Promise<CommandResult>;
}

export declare class Veto extends RpcError {
  constructor(reason: string, data?: Json);
}

export declare class CommandResult {
  constructor(exitCode?: number, stdout?: string, stderr?: string);
  exitCode: number;
  stdout: string;
  stderr: string;
  toJSON(): { exit_code: number; stdout: string; stderr: string };
}

export type CommandReturn =
  | void
  | null
  | number
  | boolean
  | string
  | CommandResult
  | { exitCode?: number; exit_code?: number; stdout?: string; stderr?: string };

type Awaitable<T> = T | Promise<T>;

export declare class Plugin {
  constructor(name: string, version: string, options?: { grace?: number });
  readonly name: string;
  readonly version: string;
  initParams: InitializeParams | null;
  config: { [key: string]: any };
  projectRoot: string;
  protocol: number | null;
  /** Host calls as methods. */
  readonly host: Host;
  hostCall(method: string, params?: Json): Promise<any>;
  beforeTask(fn: (ctx: TaskContext) => Awaitable<void>): this;
  afterTask(fn: (ctx: TaskContext, result: TaskResult) => Awaitable<void>): this;
  onTaskFailure(fn: (ctx: TaskContext, error: TaskError) => Awaitable<void>): this;
  onInitialize(fn: (params: InitializeParams) => Awaitable<void>): this;
  onShutdown(fn: () => Awaitable<void>): this;
  command(name: string, description: string, fn: (args: string[], cwd: string) => Awaitable<CommandReturn>): this;
  command(name: string, fn: (args: string[], cwd: string) => Awaitable<CommandReturn>): this;
  log(level: 'error' | 'warn' | 'info' | 'debug', message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  progress(message: string, options?: { task?: string; percent?: number }): void;
  run(options?: { input?: NodeJS.ReadableStream; output?: NodeJS.WritableStream; exit?: boolean }): Promise<number>;
}

/** An HTTP answer (see `httpRequest`). */
export declare class HttpResponse {
  readonly status: number;
  readonly reason: string;
  readonly headers: { [name: string]: string | string[] | undefined };
  readonly body: Buffer;
  readonly ok: boolean;
  text(): string;
  json(): any;
}

/**
 * An HTTP(S) request through the daemon's network proxy (`HTTP_PROXY`/`HTTPS_PROXY`;
 * `NO_PROXY` is not honoured). Resolves with every status; the proxy refuses a host
 * outside the plugin's `network` permission with `403` and its reason in the body.
 */
export declare function httpRequest(
  method: string,
  url: string,
  options?: { body?: Buffer | string | Json; headers?: { [name: string]: string }; timeout?: number },
): Promise<HttpResponse>;

declare const sdk: {
  Plugin: typeof Plugin;
  httpRequest: typeof httpRequest;
  HttpResponse: typeof HttpResponse;
  Veto: typeof Veto;
  RpcError: typeof RpcError;
  CommandResult: typeof CommandResult;
  ErrorCode: typeof ErrorCode;
  PROTOCOL_VERSIONS: typeof PROTOCOL_VERSIONS;
  MAX_LINE_BYTES: typeof MAX_LINE_BYTES;
};
export default sdk;
