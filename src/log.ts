// Structured JSON logs (pino). Every log line about an object carries its hierarchy key
// as `key`, so one object's story can be grepped out of a busy operator's output.
import { pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger };

/** The process-wide root logger; children add `component` and `key`. Level from TRELLIS_LOG_LEVEL. */
export const rootLogger: Logger = pino({
  level: process.env.TRELLIS_LOG_LEVEL ?? (process.env.NODE_ENV === 'test' ? 'silent' : 'info'),
  base: undefined,
  timestamp: pino.stdTimeFunctions.isoTime,
});

export function componentLogger(component: string, parent: Logger = rootLogger): Logger {
  return parent.child({ component });
}
