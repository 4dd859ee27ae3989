// Kubernetes quantities as Volumes state their capacity (`10Gi`, `500M`, `1.5Ti`, or a plain
// integer of bytes). Guarantees: the result is a whole number of bytes, rounded up (a volume
// is never smaller than asked); anything the CRD's pattern would refuse throws a RangeError
// naming the text.

/** Bytes per unit suffix of a Kubernetes quantity; also what the sim-array's size flags read. */
export const quantityUnits: Readonly<Record<string, number>> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** Bytes of a quantity such as `10Gi`; throws a RangeError for what is no positive quantity. */
export function parseQuantity(quantity: string | number): number {
  if (typeof quantity === 'number') {
    if (!Number.isSafeInteger(quantity) || quantity <= 0) throw new RangeError(`capacity ${quantity} must be a positive integer of bytes`);
    return quantity;
  }
  const match = /^\+?(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.exec(quantity.trim());
  if (!match) throw new RangeError(`capacity "${quantity}" is not a quantity such as 10Gi or 500M`);
  const bytes = Math.ceil(Number(match[1]) * quantityUnits[match[2] ?? '']!);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`capacity "${quantity}" must be above zero and below 8 PiB`);
  return bytes;
}

/** A byte count in the largest binary unit that divides it (`10Gi`), for messages. */
export function formatBytes(bytes: number): string {
  for (const unit of ['Ei', 'Pi', 'Ti', 'Gi', 'Mi', 'Ki'] as const) {
    const size = quantityUnits[unit]!;
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}
