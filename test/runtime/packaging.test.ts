// What `npm run build` puts in dist/: production code only. No test harness, no fake clock,
// and nothing under src/ importing from test/.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join, relative } from 'node:path';

describe('packaging: dist/ ships no test-only code', function () {
  this.timeout(120_000);

  it('the build compiles no file from test/ and no testing module', () => {
    const root = join(import.meta.dirname, '..', '..');
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--listFilesOnly'], { cwd: root, encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    const ours = result.stdout.split('\n').filter((f) => f && !f.includes('node_modules')).map((f) => relative(root, f));
    expect(ours.length).to.be.greaterThan(50);
    expect(ours.filter((f) => !f.startsWith('src/') || /(^|\/)testing(\/|\.ts$)/.test(f))).to.deep.equal([]);
  });
});
