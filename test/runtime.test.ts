import { expect } from 'chai';

describe('runtime', () => {
  it('runs on Node 24 or later (the npm-installed runtime, not the system Node 20)', () => {
    console.log(`      node ${process.version}`);
    const major = Number(process.versions.node.split('.')[0]);
    expect(major).to.be.at.least(24);
  });
});
