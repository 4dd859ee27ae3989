;; Trellis's scans for content-defined cut points, one per rolling hash (see chunker.ts for
;; the rules; chunk-workers.ts runs them): scan (gear) and scanMul (gear-mul). Compiled to
;; gear-scan-wasm.ts by `npm run wasm`; a test checks that the committed bytes are this file's.
;;
;; Memory (the caller's, shared, so that bytes other threads put there are scanned where
;; they lie; see block-pool.ts): the 256-entry gear table as i32 at address 0; the bytes to
;; scan and the output anywhere after it, below 2 GiB. For each position whose hash is a
;; candidate for maskLarge, a scan stores one i32: the position, with bit 31 set when it is
;; a candidate for maskSmall too. The caller leaves room for 4 bytes per scanned byte.
(module
  (import "env" "memory" (memory 1 32767 shared))
  ;; The rolling hash after the last scan, for a scan that goes on where it stopped.
  (global $hash (export "hash") (mut i32) (i32.const 0))
  ;; gear-mul's multiplier (2^32 / the golden ratio, odd).
  (global $mul i32 (i32.const 0x9E3779B1))
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
    (local.get $out))
  ;; Format 5's rolling hash, gear-mul: h = 2h + byte * 0x9E3779B1 (mod 2^32), a candidate
  ;; where every bit of maskLarge is set (of maskSmall too, for bit 31). Like the gear hash it
  ;; depends on the last 32 bytes only, but needs no table, so four SIMD lanes compute it at
  ;; once, about four times the speed: the bytes are cut into four segments, each lane hashes
  ;; one 16 bytes at a time, starting from the hash of the 32 bytes before it; a group of 16
  ;; steps in which some lane's hash reached maskLarge is done again lane by lane to write its
  ;; candidates. A lane writes its candidates to its own quarter of the output; they are joined
  ;; in order at the end, and the last bytes (fewer than 64) are scanned one at a time.
  (func $scanMulBytes (param $p i32) (param $end i32) (param $h i32) (param $maskLarge i32) (param $maskSmall i32) (param $out i32) (result i32)
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1)) (i32.mul (i32.load8_u (local.get $p)) (global.get $mul))))
        (if (i32.eq (i32.and (local.get $h) (local.get $maskLarge)) (local.get $maskLarge))
          (then
            (i32.store (local.get $out)
              (i32.or (local.get $p)
                (i32.shl (i32.eq (i32.and (local.get $h) (local.get $maskSmall)) (local.get $maskSmall)) (i32.const 31))))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $byte)))
    (global.set $hash (local.get $h))
    (local.get $out))
  ;; The gear-mul hash of the 32 bytes before p.
  (func $mulHashBefore (param $p i32) (result i32)
    (local $q i32) (local $h i32)
    (local.set $q (i32.sub (local.get $p) (i32.const 32)))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $q) (local.get $p)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1)) (i32.mul (i32.load8_u (local.get $q)) (global.get $mul))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $byte)))
    (local.get $h))
  ;; As scan, with the gear-mul hash.
  (func (export "scanMul")
    (param $p i32) (param $end i32) (param $h i32) (param $maskLarge i32) (param $maskSmall i32) (param $out i32)
    (result i32)
    (local $seg i32) (local $i i32) (local $j i32) (local $at i32) (local $hl i32) (local $from i32)
    (local $o0 i32) (local $o1 i32) (local $o2 i32) (local $o3 i32)
    (local $g v128) (local $before v128) (local $top v128) (local $mul v128) (local $byte v128) (local $large v128) (local $x v128)
    (local $a v128) (local $b v128) (local $c v128) (local $d v128)
    (local $ab01 v128) (local $ab23 v128) (local $cd01 v128) (local $cd23 v128)
    (local $w0 v128) (local $w1 v128) (local $w2 v128) (local $w3 v128)
    ;; Segments of a multiple of 16 bytes, at least 64 (the lanes' start hashes read 32 bytes back).
    (local.set $seg (i32.and (i32.shr_u (i32.sub (local.get $end) (local.get $p)) (i32.const 2)) (i32.const -16)))
    (if (i32.lt_u (local.get $seg) (i32.const 64))
      (then (return (call $scanMulBytes (local.get $p) (local.get $end) (local.get $h) (local.get $maskLarge) (local.get $maskSmall) (local.get $out)))))
    (local.set $g (i32x4.replace_lane 0 (local.get $g) (local.get $h)))
    (local.set $g (i32x4.replace_lane 1 (local.get $g) (call $mulHashBefore (i32.add (local.get $p) (local.get $seg)))))
    (local.set $g (i32x4.replace_lane 2 (local.get $g) (call $mulHashBefore (i32.add (local.get $p) (i32.shl (local.get $seg) (i32.const 1))))))
    (local.set $g (i32x4.replace_lane 3 (local.get $g) (call $mulHashBefore (i32.add (local.get $p) (i32.mul (local.get $seg) (i32.const 3))))))
    (local.set $mul (i32x4.splat (global.get $mul)))
    (local.set $byte (i32x4.splat (i32.const 255)))
    (local.set $large (i32x4.splat (local.get $maskLarge)))
    (local.set $o0 (local.get $out))
    (local.set $o1 (i32.add (local.get $out) (i32.shl (local.get $seg) (i32.const 2))))
    (local.set $o2 (i32.add (local.get $out) (i32.shl (local.get $seg) (i32.const 3))))
    (local.set $o3 (i32.add (local.get $out) (i32.mul (local.get $seg) (i32.const 12))))
    (block $groups
      (loop $group
        (br_if $groups (i32.ge_u (local.get $i) (local.get $seg)))
        (local.set $before (local.get $g))
        (local.set $top (v128.const i32x4 0 0 0 0))
        ;; 16 bytes of each segment, turned so that 32-bit lane l of w<k> holds segment l's bytes 4k..4k+3.
        (local.set $a (v128.load (i32.add (local.get $p) (local.get $i))))
        (local.set $b (v128.load (i32.add (i32.add (local.get $p) (local.get $seg)) (local.get $i))))
        (local.set $c (v128.load (i32.add (i32.add (local.get $p) (i32.shl (local.get $seg) (i32.const 1))) (local.get $i))))
        (local.set $d (v128.load (i32.add (i32.add (local.get $p) (i32.mul (local.get $seg) (i32.const 3))) (local.get $i))))
        (local.set $ab01 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a) (local.get $b)))
        (local.set $ab23 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a) (local.get $b)))
        (local.set $cd01 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c) (local.get $d)))
        (local.set $cd23 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c) (local.get $d)))
        (local.set $w0 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $ab01) (local.get $cd01)))
        (local.set $w1 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab01) (local.get $cd01)))
        (local.set $w2 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $ab23) (local.get $cd23)))
        (local.set $w3 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab23) (local.get $cd23)))
        ;; 16 steps; top keeps each lane's highest hash: a hash with every bit of maskLarge set
        ;; is at least maskLarge (its bits are the top ones), and one that is not, is below it.
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (local.get $w0) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w0) (i32.const 8)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w0) (i32.const 16)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (i32x4.shr_u (local.get $w0) (i32.const 24)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (local.get $w1) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w1) (i32.const 8)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w1) (i32.const 16)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (i32x4.shr_u (local.get $w1) (i32.const 24)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (local.get $w2) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w2) (i32.const 8)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w2) (i32.const 16)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (i32x4.shr_u (local.get $w2) (i32.const 24)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (local.get $w3) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w3) (i32.const 8)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (v128.and (i32x4.shr_u (local.get $w3) (i32.const 16)) (local.get $byte)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (i32x4.shr_u (local.get $w3) (i32.const 24)) (local.get $mul))))
        (local.set $top (i32x4.max_u (local.get $top) (local.get $g)))
        (if (v128.any_true (i32x4.ge_u (local.get $top) (local.get $large)))
          (then
            (local.set $g (local.get $before))
            (local.set $j (i32.const 0))
            (block $steps
              (loop $step
                (br_if $steps (i32.ge_u (local.get $j) (i32.const 16)))
                (local.set $at (i32.add (i32.add (local.get $p) (local.get $i)) (local.get $j)))
                (local.set $x (i32x4.replace_lane 0 (local.get $x) (i32.load8_u (local.get $at))))
                (local.set $x (i32x4.replace_lane 1 (local.get $x) (i32.load8_u (i32.add (local.get $at) (local.get $seg)))))
                (local.set $x (i32x4.replace_lane 2 (local.get $x) (i32.load8_u (i32.add (local.get $at) (i32.shl (local.get $seg) (i32.const 1))))))
                (local.set $x (i32x4.replace_lane 3 (local.get $x) (i32.load8_u (i32.add (local.get $at) (i32.mul (local.get $seg) (i32.const 3))))))
                (local.set $g (i32x4.add (i32x4.add (local.get $g) (local.get $g)) (i32x4.mul (local.get $x) (local.get $mul))))
            (local.set $hl (i32x4.extract_lane 0 (local.get $g)))
            (if (i32.eq (i32.and (local.get $hl) (local.get $maskLarge)) (local.get $maskLarge))
              (then
                (i32.store (local.get $o0)
                  (i32.or (i32.add (local.get $at) (i32.mul (local.get $seg) (i32.const 0)))
                    (i32.shl (i32.eq (i32.and (local.get $hl) (local.get $maskSmall)) (local.get $maskSmall)) (i32.const 31))))
                (local.set $o0 (i32.add (local.get $o0) (i32.const 4)))))
            (local.set $hl (i32x4.extract_lane 1 (local.get $g)))
            (if (i32.eq (i32.and (local.get $hl) (local.get $maskLarge)) (local.get $maskLarge))
              (then
                (i32.store (local.get $o1)
                  (i32.or (i32.add (local.get $at) (i32.mul (local.get $seg) (i32.const 1)))
                    (i32.shl (i32.eq (i32.and (local.get $hl) (local.get $maskSmall)) (local.get $maskSmall)) (i32.const 31))))
                (local.set $o1 (i32.add (local.get $o1) (i32.const 4)))))
            (local.set $hl (i32x4.extract_lane 2 (local.get $g)))
            (if (i32.eq (i32.and (local.get $hl) (local.get $maskLarge)) (local.get $maskLarge))
              (then
                (i32.store (local.get $o2)
                  (i32.or (i32.add (local.get $at) (i32.mul (local.get $seg) (i32.const 2)))
                    (i32.shl (i32.eq (i32.and (local.get $hl) (local.get $maskSmall)) (local.get $maskSmall)) (i32.const 31))))
                (local.set $o2 (i32.add (local.get $o2) (i32.const 4)))))
            (local.set $hl (i32x4.extract_lane 3 (local.get $g)))
            (if (i32.eq (i32.and (local.get $hl) (local.get $maskLarge)) (local.get $maskLarge))
              (then
                (i32.store (local.get $o3)
                  (i32.or (i32.add (local.get $at) (i32.mul (local.get $seg) (i32.const 3)))
                    (i32.shl (i32.eq (i32.and (local.get $hl) (local.get $maskSmall)) (local.get $maskSmall)) (i32.const 31))))
                (local.set $o3 (i32.add (local.get $o3) (i32.const 4)))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $step)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $group)))
    ;; Lanes 1-3's candidates after lane 0's, then the last bytes from lane 3's hash.
    (local.set $from (i32.add (local.get $out) (i32.shl (local.get $seg) (i32.const 2))))
    (memory.copy (local.get $o0) (local.get $from) (i32.sub (local.get $o1) (local.get $from)))
    (local.set $o0 (i32.add (local.get $o0) (i32.sub (local.get $o1) (local.get $from))))
    (local.set $from (i32.add (local.get $out) (i32.shl (local.get $seg) (i32.const 3))))
    (memory.copy (local.get $o0) (local.get $from) (i32.sub (local.get $o2) (local.get $from)))
    (local.set $o0 (i32.add (local.get $o0) (i32.sub (local.get $o2) (local.get $from))))
    (local.set $from (i32.add (local.get $out) (i32.mul (local.get $seg) (i32.const 12))))
    (memory.copy (local.get $o0) (local.get $from) (i32.sub (local.get $o3) (local.get $from)))
    (local.set $o0 (i32.add (local.get $o0) (i32.sub (local.get $o3) (local.get $from))))
    (call $scanMulBytes (i32.add (local.get $p) (i32.shl (local.get $seg) (i32.const 2))) (local.get $end) (i32x4.extract_lane 3 (local.get $g))
      (local.get $maskLarge) (local.get $maskSmall) (local.get $o0))))
