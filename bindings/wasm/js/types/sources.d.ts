// What a load takes: bytes in memory, or files streamed while it loads.

/** Bytes of one file. Strings are accepted for JSON files of a folder. */
export type Bytes = Uint8Array | ArrayBuffer | SharedArrayBuffer | ArrayBufferView;

/**
 * What `load` takes: one safetensors file, or a model folder / diffusers
 * layout as file names (`"unet/config.json"`) mapped to their contents.
 */
export type ModelSource = Bytes | Record<string, Bytes | string> | Map<string, Bytes | string>;

/** One file of a streamed model: fetched (a URL string or `URL`, a
 * `Request`), or read (a `Response`, a `ReadableStream`, a `Blob` or `File`). */
export type StreamFile = string | URL | Request | Response | ReadableStream<Uint8Array> | Blob;

/**
 * What `load` streams: one safetensors file from a URL, a `Request`, a
 * `Response`, a `ReadableStream` or a `Blob`; a model folder on a server
 * (`{ baseUrl, files }`: the names, such as `"unet/config.json"`, are
 * resolved against `baseUrl`); or file names mapped to any of these or to
 * bytes (a string in such an object is a file's contents, not a URL: pass a
 * `URL`).
 */
export type StreamSource =
  | StreamFile
  | { baseUrl: string | URL; files: string[] }
  | Record<string, StreamFile | Bytes | string>
  | Map<string, StreamFile | Bytes | string>;

/** Progress of one file of a streamed load. */
export interface FileProgress {
  /** The file's name in the model (`unet/config.json`). */
  name: string;
  /** Where it comes from, once opened. */
  url: string | null;
  /** Bytes received (each is written into its place as it arrives). */
  bytesDone: number;
  /** `Content-Length` (or the Blob's size), when known. */
  bytesTotal: number | null;
  /** Whether it came from the Cache API. */
  cached: boolean;
}

/** Progress of a streamed load: download and load are one (each byte is
 * written into its tensor as it arrives). */
export interface StreamProgress {
  /** Bytes received so far, every file together. Never decreases. */
  bytesDone: number;
  /** Every file's length together, once each is known; else `null`. */
  bytesTotal: number | null;
  /** Tensors complete so far. Never decreases. */
  tensorsDone: number;
  /** Tensors of the weights files whose header has arrived. */
  tensorsTotal: number;
  /** The weights file being written. */
  file: string | null;
  /** Each file, in order. */
  files: FileProgress[];
}

export interface StreamLoadOptions {
  /** Called after every chunk written, and last with the totals. */
  onProgress?: (progress: StreamProgress) => void;
  /** Aborting it cancels the downloads and the load (code 3). */
  signal?: AbortSignal;
  /**
   * Keep downloaded files in the browser's Cache API, keyed by URL: a
   * later load of the same URL makes no request (`true`), or one
   * conditional request (`'revalidate'`: `If-None-Match` with the stored
   * ETag; a 304 reads the cached file, anything else downloads it again).
   * A cached file is checked against its stored length as it loads; when
   * the load fails with code 8 or 9, the files it read from (or stored in)
   * the cache are dropped from it. Rejects with code 1 where there is no
   * Cache API (Node).
   */
  cache?: boolean | 'revalidate';
  /** Fail with code 17 (Timeout) when a download sends nothing for this
   * many milliseconds (default 30000; 0 or Infinity: never). */
  stallTimeout?: number;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: typeof fetch;
}
