# The front-end's FFT for Thumb boards (RP2040: Cortex-M0+, armv6m), in
# MicroPython's inline assembler; frontend.py uses it on ARM and keeps its viper
# fft elsewhere (ESP32, the unix port). flash sends this file to ARM boards only.
# Same arithmetic, same storage as frontend.fft (docs/arithmetic.md, "Front-end"):
# complex values interleaved (re, im) as uint16 offset by +32768. Measured on the
# emulated RP2040 (bench/frontend.py): ~6x fewer cycles than the viper fft.
#
# Per twiddle, frontend.py precomputes four int32 words: c, s, and
#   Kr = 16384 + 32769 * 2^15 - 2^15 * (c + s)
#   Ki = 16384 + 32769 * 2^15 - 2^15 * (c - s)       (mod 2^32)
# so that with b stored as b + 32768, (b_re * c + b_im * s + Kr) >> 15 is
# tr + 32769 exactly: the offsets and the rounding half fold into one add, and
# the sum, though its terms wrap, ends inside int32 (|tr| < 2^15).
# r8-r11 are callee-saved and nothing saves them for us: fft saves them itself.
# The assembler's names (r0, label, ldrh...) are not Python's:
# pyright: reportUndefinedVariable=false, reportArgumentType=false, reportCallIssue=false
import micropython


@micropython.asm_thumb
def fft(r0, r1, r2):
    # r0 = z (M complex values, 4 bytes each), r1 = twiddle words (16 bytes per
    # twiddle t = 0..M/2-1, W_M^t), r2 = M (a power of two, >= 2).
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    lsl(r2, r2, 2)  # r2: 4M, the array's bytes
    add(r3, r0, r2)
    mov(r12, r3)  # r12: end of z
    mov(r4, 4)  # r4: butterfly distance in bytes (4 * half)
    lsl(r5, r2, 1)  # r5: twiddle step in bytes, 16 * M / (2 * half)
    label(STAGE)
    cmp(r4, r2)
    bge(DONE)
    mov(r6, 0)  # r6: 4 * j
    mov(r7, r1)  # r7: this j's twiddle
    label(TWIDDLE)
    cmp(r6, r4)
    bge(NEXT)
    ldr(r3, [r7, 0])
    mov(r8, r3)  # c
    ldr(r3, [r7, 4])
    mov(r9, r3)  # s
    ldr(r3, [r7, 8])
    mov(r10, r3)  # Kr
    ldr(r3, [r7, 12])
    mov(r11, r3)  # Ki
    push({r0, r1, r2, r4, r5, r6, r7})
    add(r0, r0, r6)  # r0: a (first of the pair)
    mov(r1, r4)  # r1: distance to b
    label(BFLY)
    add(r2, r0, r1)  # r2: b
    ldrh(r4, [r2, 0])
    ldrh(r5, [r2, 2])
    mov(r3, r8)
    mov(r6, r4)
    mul(r6, r3)  # br' c
    mov(r7, r5)
    mul(r7, r3)  # bi' c
    mov(r3, r9)
    mul(r4, r3)  # br' s
    mul(r5, r3)  # bi' s
    add(r6, r6, r5)
    sub(r7, r7, r4)
    mov(r3, r10)
    add(r6, r6, r3)
    asr(r6, r6, 15)  # r6: tr + 32769
    mov(r3, r11)
    add(r7, r7, r3)
    asr(r7, r7, 15)  # r7: ti + 32769
    mov(r5, 128)
    lsl(r5, r5, 8)
    add(r5, 1)  # r5: 32769
    ldrh(r4, [r0, 0])  # ar + 32768
    add(r3, r4, r6)
    lsr(r3, r3, 1)  # (ar + tr + 1) >> 1, + 32768
    strh(r3, [r0, 0])
    sub(r4, r4, r6)
    asr(r4, r4, 1)
    add(r4, r4, r5)  # (ar - tr + 1) >> 1, + 32768
    strh(r4, [r2, 0])
    ldrh(r4, [r0, 2])
    add(r3, r4, r7)
    lsr(r3, r3, 1)
    strh(r3, [r0, 2])
    sub(r4, r4, r7)
    asr(r4, r4, 1)
    add(r4, r4, r5)
    strh(r4, [r2, 2])
    add(r0, r2, r1)  # the next group's a
    mov(r3, r12)
    cmp(r0, r3)
    blt(BFLY)
    pop({r0, r1, r2, r4, r5, r6, r7})
    add(r6, 4)
    add(r7, r7, r5)
    b(TWIDDLE)
    label(NEXT)
    lsl(r4, r4, 1)
    lsr(r5, r5, 1)
    b(STAGE)
    label(DONE)
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)


@micropython.asm_thumb
def bands(r0, r1, r2, r3):
    # Split, power and filterbank of the FFT output (frontend.accumulate's
    # arithmetic) for the bins a band uses: r0 = z, r1 = bin words, r2 = energy
    # slots (int32, zero on entry), r3 = end of the bin words. Per bin, 20 bytes
    # (frontend.py makes them): P and Q byte offsets in z (lo | hi << 16),
    # c | s << 16 (int16 each), Kr = 16384 - 65536 c, Ki = 16384 + 65536 s, and
    # the slot's byte offset | weight << 16. With P', Q' the stored (+32768)
    # values, fr = P'im + Q'im - 65536, so Kr and Ki fold that offset and the
    # rounding half into one add each.
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    mov(r8, r0)  # z
    mov(r9, r2)  # energy
    mov(r10, r3)  # end
    label(BIN)
    ldr(r4, [r1, 0])
    mov(r0, r8)
    lsl(r5, r4, 16)
    lsr(r5, r5, 16)
    add(r5, r5, r0)  # r5: P
    lsr(r4, r4, 16)
    add(r4, r4, r0)  # r4: Q
    ldrh(r2, [r5, 0])
    ldrh(r3, [r4, 0])
    sub(r6, r3, r2)  # fi = Q're - P're
    add(r2, r2, r3)
    mov(r12, r2)  # er + 65536
    ldrh(r2, [r5, 2])
    ldrh(r3, [r4, 2])
    sub(r7, r2, r3)
    mov(r11, r7)  # ei = P'im - Q'im
    add(r2, r2, r3)  # r2: fr + 65536
    ldr(r4, [r1, 4])
    lsl(r5, r4, 16)
    asr(r5, r5, 16)  # c
    asr(r4, r4, 16)  # s
    mov(r3, r2)
    mul(r3, r5)
    mov(r7, r6)
    mul(r7, r4)
    add(r3, r3, r7)
    ldr(r7, [r1, 8])
    add(r3, r3, r7)
    asr(r3, r3, 15)  # tr
    mul(r6, r5)
    mul(r2, r4)
    sub(r6, r6, r2)
    ldr(r7, [r1, 12])
    add(r6, r6, r7)
    asr(r6, r6, 15)  # ti
    mov(r2, r12)
    add(r2, r2, r3)
    add(r2, 2)
    asr(r2, r2, 2)  # X_re + 16384
    mov(r7, r11)
    add(r7, r7, r6)
    add(r7, 2)
    asr(r7, r7, 2)  # X_im
    mul(r7, r7)
    mov(r3, 1)
    lsl(r3, r3, 14)
    sub(r2, r2, r3)  # X_re
    mul(r2, r2)
    add(r7, r7, r2)  # r7: power
    ldr(r4, [r1, 16])
    lsr(r5, r4, 16)  # weight, Q14
    lsl(r4, r4, 16)
    lsr(r4, r4, 16)
    mov(r3, r9)
    add(r4, r4, r3)  # r4: the slot
    lsr(r2, r7, 14)
    mul(r2, r5)
    lsl(r3, r7, 18)
    lsr(r3, r3, 18)
    mul(r3, r5)
    lsr(r3, r3, 14)
    add(r2, r2, r3)  # part = floor(power * weight / 2^14)
    ldr(r3, [r4, 0])
    add(r3, r3, r2)
    str(r3, [r4, 0])
    sub(r7, r7, r2)
    ldr(r3, [r4, 4])
    add(r3, r3, r7)
    str(r3, [r4, 4])
    add(r1, 20)
    mov(r3, r10)
    cmp(r1, r3)
    blt(BIN)
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)
