// Keeps the operator's JSON logs out of the test report: loaded before any spec (first in
// .mocharc.json `require`), so src/log.ts sees the level when it first builds its logger.
// Set TRELLIS_LOG_LEVEL=debug to see them while debugging a test.
process.env.TRELLIS_LOG_LEVEL ??= 'silent';
