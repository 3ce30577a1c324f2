// Numbers, sizes, durations and times as the pages show them ("–" where there is nothing).

export function stageText(progress) {
  if (!progress?.stage) return "";
  const epochs = progress.epochs ? ` ${progress.epoch ?? 0}/${progress.epochs}` : "";
  return `${progress.stage}${epochs}`;
}

// A waiting job's place: "#3", or "unplaced" until the scheduler's next pass has placed it.
export function place(waiting) {
  return waiting.position == null ? "unplaced" : `#${waiting.position}`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function pct(x, digits = 1) {
  return x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`;
}

export function num(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

export function ratio(x) {
  return x === null || x === undefined ? "–" : `${Number(x).toFixed(1)}×`;
}

// A KD gain with its standard error: "+0.042 ± 0.010". Takes a report or a job list's `result`.
export function gainText(result) {
  if (result?.kd_gain === null || result?.kd_gain === undefined) return "–";
  const sign = result.kd_gain >= 0 ? "+" : "−";
  const se =
    result.kd_gain_stderr === null || result.kd_gain_stderr === undefined
      ? ""
      : ` ± ${num(result.kd_gain_stderr)}`;
  return `${sign}${num(Math.abs(result.kd_gain))}${se}`;
}
