import { expect } from 'chai';
import { HierarchyPath } from '../../src/core/path.js';

describe('core/path', () => {
  const p = HierarchyPath.parse;

  it('compares segment-wise: backends/a is not an ancestor of backends/ab', () => {
    expect(p('backends/a').isAncestorOf(p('backends/ab'))).to.equal(false);
    expect(p('backends/a').isAncestorOf(p('backends/ab/volumes/x'))).to.equal(false);
    expect(p('backends/a').isAncestorOf(p('backends/a/volumes/x'))).to.equal(true);
    expect(p('backends/a').isAncestorOf(p('backends/a'))).to.equal(false);
    expect(HierarchyPath.root.isAncestorOf(p('backends'))).to.equal(true);
  });

  it('gives parent and ancestors root first', () => {
    const snap = p('backends/array-a/volumes/team-a.db-0/snapshots/s1');
    expect(snap.toString()).to.equal('backends/array-a/volumes/team-a.db-0/snapshots/s1');
    expect(snap.parent()?.toString()).to.equal('backends/array-a/volumes/team-a.db-0/snapshots');
    expect(snap.ancestors().map(String)).to.deep.equal([
      '',
      'backends',
      'backends/array-a',
      'backends/array-a/volumes',
      'backends/array-a/volumes/team-a.db-0',
      'backends/array-a/volumes/team-a.db-0/snapshots',
    ]);
    expect(HierarchyPath.root.parent()).to.equal(undefined);
  });

  it('orders globally: ancestors first, then siblings by code unit, whatever the input order', () => {
    const paths = ['backends/b', 'backends/a/volumes/n.z', 'backends/ab', 'backends/a', 'backends/a/volumes/n.a', 'backends/B', ''];
    const sorted = paths.map(p).sort(HierarchyPath.compare).map(String);
    expect(sorted).to.deep.equal(['', 'backends/B', 'backends/a', 'backends/a/volumes/n.a', 'backends/a/volumes/n.z', 'backends/ab', 'backends/b']);
  });

  it('rejects segments that would break the segment-wise comparison', () => {
    expect(() => HierarchyPath.of('a/b')).to.throw(TypeError);
    expect(() => p('backends//x')).to.throw(TypeError);
  });
});
