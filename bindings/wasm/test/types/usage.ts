// Type-checked (tsc -p test/types), never run: the declarations describe the
// API as the README uses it, and reject misuse.
import init, {
  ModelManager,
  ModelPool,
  Lease,
  ModelManagerError,
  ErrorCode,
  type ModelStatus,
  type PoolEvent,
  type Progress,
  type Snapshot,
  type StateChange,
  type Tensor,
  type StreamProgress,
  type FileProgress,
  WorkerModelManager,
  type WorkerLease,
} from 'model-manager-wasm';

export async function example(weights: ArrayBuffer, unetConfig: string): Promise<void> {
  await init();
  const manager = new ModelManager({ chunkSize: 1 << 20, dtype: 'f16' });
  const off: () => void = manager.onStateChange((change: StateChange) => {
    const to: 'idle' | 'loading' | 'ready' | 'unloading' | 'failed' = change.to;
    void to;
  });
  const controller = new AbortController();
  try {
    const snapshot: Snapshot = await manager.load(
      { 'unet/config.json': unetConfig, 'unet/diffusion_pytorch_model.safetensors': weights },
      { signal: controller.signal, onProgress: (p: Progress) => void (p.bytesDone / p.bytesTotal) },
    );
    const generation: number = snapshot.generation;
    const bytes: number = snapshot.residentBytes + snapshot.unreclaimedBytes;
    void generation;
    void bytes;
  } catch (error) {
    if (error instanceof ModelManagerError && error.code === ErrorCode.Cancelled) return;
    throw error;
  }
  const size: number | null = manager.sampleSize;
  void size;
  {
    using lease = manager.acquire();
    const t: Tensor | undefined = lease.tensor('unet/conv_in.weight');
    if (t?.dtype === 'f32') {
      const data: Float32Array = t.data;
      void data;
    } else if (t?.dtype === 'i64') {
      const data: BigInt64Array = t.data;
      void data;
    }
  }
  await manager.unload();
  off();
  manager.free();

  // @ts-expect-error: dtype is one of f32, f16, bf16
  new ModelManager({ dtype: 'int8' });
  // @ts-expect-error: a number is no model
  void manager.load(42);
  // @ts-expect-error: state is read-only
  manager.state = 'idle';
}

async function pool() {
  const pool = new ModelPool({ memoryBudget: 1 << 30, keepAlive: 60_000 });
  pool.add('encoder', new Uint8Array(8), { pinned: true });
  pool.add('vae', { 'config.json': '{}', 'model.safetensors': new Uint8Array(8) }, { keepAlive: null });
  const lease: Lease = await pool.acquire('encoder', { signal: new AbortController().signal });
  const version: number | null = lease.version;
  const next: number = await pool.reload('encoder', new Uint8Array(8), { unloadFirst: true });
  const status: ModelStatus | null = pool.status('vae');
  const charged: number = pool.snapshot.charged;
  const off = pool.onEvent((e: PoolEvent) => {
    if (e.kind === 'unloading') console.log(e.reason, e.forId);
  });
  off();
  void [version, next, status, charged, pool.metricsText()];
  await pool.close();
  // @ts-expect-error: a budget is required
  new ModelPool({});
}
void pool;

export async function streaming(): Promise<void> {
  await init();
  const manager = new ModelManager();
  await manager.load('https://example.com/model.safetensors', {
    cache: true,
    stallTimeout: 10_000,
    onProgress: (p: StreamProgress) => {
      const total: number | null = p.bytesTotal;
      const first: FileProgress | undefined = p.files[0];
      void total;
      void first;
    },
  });
  await manager.load({ baseUrl: 'https://example.com/sd/', files: ['model_index.json', 'unet/config.json'] });
  await manager.load({ 'config.json': '{}', 'model.safetensors': new URL('https://example.com/m.safetensors') });
  await manager.load(new Blob([]));
  const cleared: boolean = await ModelManager.clearCache();
  void cleared;

  const worker = new WorkerModelManager({ dtype: 'f16' });
  await worker.load(new URL('https://example.com/model.safetensors'), { cache: true });
  const lease: WorkerLease = await worker.acquire();
  const t: Tensor | undefined = await lease.tensor('w');
  void t;
  await lease.release();
  await worker.close();
  // @ts-expect-error: acquire() is asynchronous in a worker
  worker.acquire().tensorNames();
}
