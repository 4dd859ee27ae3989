;; Trellis's gear-hash scan for content-defined cut points (see chunker.ts for the rules;
;; chunk-workers.ts runs it). Compiled to gear-scan-wasm.ts by `npm run wasm`; a test checks
;; that the committed bytes are this file's.
;;
;; Memory (the caller's, shared, so that bytes other threads put there are scanned where
;; they lie; see block-pool.ts): the 256-entry gear table as i32 at address 0; the bytes to
;; scan and the output anywhere after it, below 2 GiB. For each position whose hash has every
;; bit of maskLarge clear, scan stores one i32: the position, with bit 31 set when the bits
;; of maskSmall are clear too. The caller leaves room for 4 bytes per scanned byte.
(module
  (import "env" "memory" (memory 1 32767 shared))
  ;; The rolling hash after the last scan, for a scan that goes on where it stopped.
  (global $hash (export "hash") (mut i32) (i32.const 0))
  ;; Scans [p, end) from hash h; returns the end of the output written from `out`.
  (func (export "scan")
    (param $p i32) (param $end i32) (param $h i32) (param $maskLarge i32) (param $maskSmall i32) (param $out i32)
    (result i32)
    ;; Four bytes per turn: the hash is one dependency chain, so the loop's own compare and
    ;; increment are what unrolling saves.
    (block $quads
      (loop $quad
        (br_if $quads (i32.gt_u (i32.add (local.get $p) (i32.const 4)) (local.get $end)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=0 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskLarge)))
          (then
            (i32.store (local.get $out)
              (i32.or (i32.add (local.get $p) (i32.const 0))
                (i32.shl (i32.eqz (i32.and (local.get $h) (local.get $maskSmall))) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskLarge)))
          (then
            (i32.store (local.get $out)
              (i32.or (i32.add (local.get $p) (i32.const 1))
                (i32.shl (i32.eqz (i32.and (local.get $h) (local.get $maskSmall))) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskLarge)))
          (then
            (i32.store (local.get $out)
              (i32.or (i32.add (local.get $p) (i32.const 2))
                (i32.shl (i32.eqz (i32.and (local.get $h) (local.get $maskSmall))) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=3 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskLarge)))
          (then
            (i32.store (local.get $out)
              (i32.or (i32.add (local.get $p) (i32.const 3))
                (i32.shl (i32.eqz (i32.and (local.get $h) (local.get $maskSmall))) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $quad)))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=0 (local.get $p)) (i32.const 2)))))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskLarge)))
          (then
            (i32.store (local.get $out)
              (i32.or (i32.add (local.get $p) (i32.const 0))
                (i32.shl (i32.eqz (i32.and (local.get $h) (local.get $maskSmall))) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $byte)))
    (global.set $hash (local.get $h))
    (local.get $out)))
