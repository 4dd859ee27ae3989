// `npm run crds`: writes crds/*.yaml from src/api, the single source of truth.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderCrds } from '../api/crd.js';

const dir = join(import.meta.dirname, '..', '..', 'crds');
await mkdir(dir, { recursive: true });
const files = renderCrds();
for (const stale of (await readdir(dir)).filter((f) => f.endsWith('.yaml') && !files.has(f))) await rm(join(dir, stale));
for (const [name, text] of files) await writeFile(join(dir, name), text);
console.log(`wrote ${files.size} CRDs to ${dir}`);
