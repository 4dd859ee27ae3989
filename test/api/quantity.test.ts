import { expect } from 'chai';
import { formatBytes, parseQuantity } from '../../src/api/quantity.js';

describe('controllers/quantity', () => {
  it('reads binary and decimal suffixes and plain byte counts, rounding a fraction up', () => {
    expect(parseQuantity('10Gi')).to.equal(10 * 2 ** 30);
    expect(parseQuantity('500M')).to.equal(500e6);
    expect(parseQuantity('1.5Ki')).to.equal(1536);
    expect(parseQuantity('0.1')).to.equal(1);
    expect(parseQuantity(4096)).to.equal(4096);
    expect(parseQuantity('+2Ti')).to.equal(2 * 2 ** 40);
  });

  it('refuses what is no positive quantity, naming it', () => {
    expect(() => parseQuantity('10GB')).to.throw(RangeError, 'capacity "10GB" is not a quantity such as 10Gi or 500M');
    expect(() => parseQuantity('0')).to.throw(RangeError, 'must be above zero');
    expect(() => parseQuantity(-1)).to.throw(RangeError);
  });

  it('formats a byte count in the largest binary unit that divides it', () => {
    expect(formatBytes(10 * 2 ** 30)).to.equal('10Gi');
    expect(formatBytes(1536)).to.equal('1536');
    expect(formatBytes(3 * 2 ** 20)).to.equal('3Mi');
  });
});
