// Models built in memory for the tests (Node and browser alike): the
// safetensors format is an 8-byte little-endian header length, a JSON header
// (dtype, shape, data_offsets relative to the end of the header), then the
// data.

const ARRAYS = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U8: Uint8Array,
};

/**
 * One safetensors file from `{ name: { dtype: 'F32', shape: [2, 3], data } }`
 * where `data` is a typed array of the dtype's element type (raw bits in a
 * Uint16Array for F16 and BF16).
 */
export function safetensors(tensors, metadata) {
  const header = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const parts = [];
  for (const [name, { dtype, shape, data }] of Object.entries(tensors)) {
    if (!(data instanceof ARRAYS[dtype])) throw new Error(`${name}: data must be a ${ARRAYS[dtype].name}`);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** `n` f32 values `seed, seed + 1, ...`. */
export function ramp(n, seed = 0) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = seed + i;
  return a;
}

/** A model of `tensors` f32 tensors of `elements` each (named t0, t1, ...). */
export function f32Model(tensors, elements, seed = 0) {
  const spec = {};
  for (let i = 0; i < tensors; i++) {
    spec[`t${i}`] = { dtype: 'F32', shape: [elements], data: ramp(elements, seed + i * elements) };
  }
  return safetensors(spec);
}

/** A small model with one tensor of every dtype the API hands out. */
export function everyDtype() {
  return safetensors(
    {
      f32: { dtype: 'F32', shape: [2, 3], data: ramp(6, 1) },
      f64: { dtype: 'F64', shape: [2], data: new Float64Array([0.5, -2.25]) },
      f16: { dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) }, // 1, -2
      bf16: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0x4040]) }, // 1, 3
      i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, -2n, 9007199254740993n]) },
      i32: { dtype: 'I32', shape: [2], data: new Int32Array([-7, 7]) },
      u32: { dtype: 'U32', shape: [1], data: new Uint32Array([4000000000]) },
      i16: { dtype: 'I16', shape: [2], data: new Int16Array([-300, 300]) },
      u8: { dtype: 'U8', shape: [4], data: new Uint8Array([0, 1, 254, 255]) },
    },
    { format: 'pt' },
  );
}

const json = (value) => new TextEncoder().encode(JSON.stringify(value));

/** A diffusers layout: a unet with `sample_size` 64 and a text encoder. */
export function diffusersPipeline() {
  return {
    'model_index.json': json({
      _class_name: 'StableDiffusionPipeline',
      unet: ['diffusers', 'UNet2DConditionModel'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      scheduler: ['diffusers', 'PNDMScheduler'],
      safety_checker: [null, null],
    }),
    'unet/config.json': json({ sample_size: 64, in_channels: 4 }),
    'unet/diffusion_pytorch_model.safetensors': safetensors({
      'conv_in.weight': { dtype: 'F32', shape: [2, 2], data: ramp(4, 10) },
    }),
    'text_encoder/config.json': json({ hidden_size: 8 }),
    'text_encoder/model.safetensors': safetensors({
      'embeddings.weight': { dtype: 'F32', shape: [3], data: ramp(3, 100) },
    }),
    'scheduler/scheduler_config.json': json({ num_train_timesteps: 1000 }),
  };
}

/** A model folder: config.json (sample_size 32) and two shards with an index. */
export function shardedFolder() {
  return {
    'config.json': json({ sample_size: 32 }),
    'model.safetensors.index.json': json({
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
    }),
    'model-00001-of-00002.safetensors': safetensors({ a: { dtype: 'F32', shape: [2], data: ramp(2, 1) } }),
    'model-00002-of-00002.safetensors': safetensors({ b: { dtype: 'F32', shape: [2], data: ramp(2, 3) } }),
  };
}

/** Check progress reports: each field never decreases, and the last one
 * equals the totals. Returns an error message, or null. */
export function checkProgress(reports) {
  if (reports.length === 0) return 'no progress was reported';
  const keys = ['bytesDone', 'bytesTotal', 'tensorsDone', 'tensorsTotal'];
  for (let i = 1; i < reports.length; i++) {
    for (const k of keys) {
      if (reports[i][k] < reports[i - 1][k]) {
        return `progress went back: ${k} ${reports[i - 1][k]} -> ${reports[i][k]} at report ${i}`;
      }
    }
  }
  const last = reports[reports.length - 1];
  if (last.bytesDone !== last.bytesTotal || last.tensorsDone !== last.tensorsTotal) {
    return `progress ended short of the totals: ${JSON.stringify(last)}`;
  }
  return null;
}

/** Resolve after `n` macrotasks (loads advance one chunk per macrotask). */
export async function turns(n) {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

/** `{ onProgress, started }`: `started` resolves at the first progress
 * report, when a load of many chunks is certainly in the middle. */
export function whenStarted() {
  let onProgress;
  const started = new Promise((resolve) => {
    onProgress = resolve;
  });
  return { onProgress, started };
}
