// Load a model in Node from disk or from a URL: a .safetensors file, a model
// folder or a diffusers pipeline folder, streamed file by file into wasm
// memory (no file is read whole into a buffer). Ctrl-C cancels the load.
//
//   node examples/node.mjs path/to/model.safetensors
//   node examples/node.mjs path/to/stable-diffusion-folder
//   node examples/node.mjs https://example.com/model.safetensors
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { ModelManager, ModelManagerError, ErrorCode } from 'model-manager-wasm';

/** A file on disk as a stream of its bytes. */
const fileStream = (path) => Readable.toWeb(createReadStream(path));

/** A folder as { "unet/config.json": stream, ... } (JSON and safetensors only). */
async function folder(dir) {
  const files = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !/\.(json|safetensors)$/.test(entry.name)) continue;
    const path = join(entry.parentPath ?? entry.path, entry.name);
    files[relative(dir, path).split(sep).join('/')] = fileStream(path);
  }
  return files;
}

const arg = process.argv[2];
if (!arg) {
  console.error('usage: node examples/node.mjs MODEL_FILE_OR_FOLDER_OR_URL');
  process.exit(2);
}
const source = /^https?:\/\//.test(arg)
  ? arg // fetched, and streamed as it downloads
  : (await stat(arg)).isDirectory()
    ? await folder(arg)
    : fileStream(arg);

const manager = new ModelManager(); // no init() needed in Node
manager.onStateChange(({ from, to, command }) => console.log(`state: ${from} -> ${to} (${command})`));

const abort = new AbortController();
process.once('SIGINT', () => abort.abort());
try {
  await manager.load(source, {
    signal: abort.signal,
    onProgress: ({ bytesDone, bytesTotal, tensorsDone, tensorsTotal }) =>
      console.log(`loading: ${bytesDone}/${bytesTotal ?? '?'} bytes, ${tensorsDone}/${tensorsTotal} tensors`),
  });
} catch (error) {
  if (error instanceof ModelManagerError && error.code === ErrorCode.Cancelled) {
    console.log('cancelled');
    process.exit(130);
  }
  // error.code is stable (8: InvalidModel, 10: MissingFile, ...); the
  // message names the file and the problem.
  console.error(`load failed (${error.codeName}, code ${error.code}): ${error.message}`);
  process.exit(1);
}

console.log(`ready: sample_size = ${manager.sampleSize}, ${manager.residentBytes} bytes resident`);
const lease = manager.acquire(); // `using lease = ...` where supported
try {
  for (const name of lease.tensorNames().slice(0, 5)) {
    const { dtype, shape, data } = lease.tensor(name);
    console.log(`${name}: ${dtype} [${shape}] first = ${data[0]}`);
  }
} finally {
  lease.release(); // an unload waits until every lease is released
}
await manager.unload();
console.log(`unloaded: ${manager.residentBytes} bytes resident`);
manager.free();
