// Stopping a process and everything it started (code-server forks its extension hosts, file
// watchers and pty host; some of those fork again). Processes are found by parent pid and
// stopped by pid, never by name. Used by `npm run demo` and the e2e tests.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** pid -> { ppid, zombie } of every process we can see. */
export function processTable() {
  const table = new Map();
  if (process.platform === 'linux') {
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses
        const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        table.set(Number(e), { ppid: Number(rest[1]), zombie: rest[0] === 'Z' || rest[0] === 'X' });
      } catch {
        // exited while we looked
      }
    }
  } else if (process.platform !== 'win32') {
    const out = execFileSync('ps', ['-A', '-o', 'pid=,ppid=,stat='], { encoding: 'utf8' });
    for (const line of out.split('\n')) {
      const [pid, ppid, stat] = line.trim().split(/\s+/);
      if (pid) table.set(Number(pid), { ppid: Number(ppid), zombie: (stat ?? '').startsWith('Z') });
    }
  }
  return table;
}

/** Every descendant of `root` (children, their children, …), as a list of pids. */
export function descendants(root, table = processTable()) {
  const children = new Map();
  for (const [pid, { ppid }] of table) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const out = [];
  const queue = [root];
  while (queue.length) {
    for (const c of children.get(queue.shift()) ?? []) {
      if (!out.includes(c)) {
        out.push(c);
        queue.push(c);
      }
    }
  }
  return out;
}

/** Whether `pid` runs (a zombie, already dead but not yet reaped, does not count). */
export function isAlive(pid, table) {
  if (table) return table.has(pid) && !table.get(pid).zombie;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return e.code === 'EPERM';
  }
  return process.platform === 'linux' ? isAlive(pid, processTable()) : true;
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/**
 * Stops `root` and every process it started: SIGTERM to each (and to root's process group when
 * root leads one, as a detached child does), re-reading the tree while they exit so late forks
 * are caught, then SIGKILL to whatever is left after `graceMs`. Resolves once none runs.
 */
export async function stopTree(root, { graceMs = 5000, group = false } = {}) {
  if (process.platform === 'win32') {
    try {
      execFileSync('taskkill', ['/pid', String(root), '/T', '/F'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    return;
  }
  const known = new Set([root]);
  const refresh = () => {
    const table = processTable();
    for (const pid of [...known]) if (isAlive(pid, table)) for (const d of descendants(pid, table)) known.add(d);
    return table;
  };
  refresh();
  if (group) signal(-root, 'SIGTERM');
  for (const pid of known) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  for (;;) {
    const table = refresh();
    const alive = [...known].filter((pid) => isAlive(pid, table));
    if (alive.length === 0) return;
    if (Date.now() > deadline) {
      if (group) signal(-root, 'SIGKILL');
      for (const pid of alive) signal(pid, 'SIGKILL');
      if (Date.now() > deadline + 3000) throw new Error(`processes ${alive.join(', ')} survived SIGKILL`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The synchronous last resort (a process 'exit' handler): SIGKILL to root's tree as it is now. */
export function killTreeSync(root, { group = false } = {}) {
  if (process.platform === 'win32') {
    try {
      execFileSync('taskkill', ['/pid', String(root), '/T', '/F'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    return;
  }
  const pids = [root, ...descendants(root)];
  if (group) signal(-root, 'SIGKILL');
  for (const pid of pids) signal(pid, 'SIGKILL');
}
