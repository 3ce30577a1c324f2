// The GPU pool's data: GET /v1/pool, read again on every poll (it is small, and it has no
// cursor: workers come and go). {workers: [{id, host, status, gpu_type, slots, free_slots,
// devices: [{index, name, ...}], jobs: [{id, name, status, gpus, devices, ...}], ...}],
// teams: [{team, queued, running}], queues: [{queue, queued, running}]}.

import { get } from "../api.js";

export function readPool() {
  return get("v1/pool");
}
