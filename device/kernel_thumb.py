# The multiply-accumulate kernel for Thumb boards (RP2040: Cortex-M0+, armv6m),
# in MicroPython's inline assembler: 4 instructions per MAC where viper, which
# keeps only two locals in registers, needs about 12. device/kernels.py uses it
# when the board is ARM and falls back to its viper kernel elsewhere (ESP32, the
# unix port); flash sends this file to ARM boards only.
#
# Contract (the same as kernels.matvec_viper): out[r] = sum_j x[j] * w[r * n + j]
# as int32, for bytes x[0..n) and w[0..rows*n), n a multiple of 8 and >= 8,
# rows >= 1. Only r0-r7 are used: the prologue saves r4-r7, nothing saves r8+.
# The host runs the machine code mpy-cross emits for this file on an emulated
# Cortex-M (tests/armv6m.py) and checks it against numpy and the viper kernel.
# The assembler's names (r0, label, ldrb, str...) are not Python's:
# pyright: reportUndefinedVariable=false, reportArgumentType=false, reportCallIssue=false
import micropython


@micropython.asm_thumb
def matvec(r0, r1, r2, r3):
    # r0 = x, r1 = w, r2 = out, r3 = n | rows << 16
    lsl(r6, r3, 16)
    lsr(r6, r6, 16)
    add(r6, r6, r0)  # r6: end of x
    lsr(r7, r3, 16)
    lsl(r7, r7, 2)
    add(r7, r7, r2)  # r7: end of out
    label(ROW)
    push({r0})  # x restarts for every row: no free register holds its start
    mov(r3, 0)
    label(MAC)
    ldrb(r4, [r0, 0])
    ldrb(r5, [r1, 0])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 1])
    ldrb(r5, [r1, 1])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 2])
    ldrb(r5, [r1, 2])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 3])
    ldrb(r5, [r1, 3])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 4])
    ldrb(r5, [r1, 4])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 5])
    ldrb(r5, [r1, 5])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 6])
    ldrb(r5, [r1, 6])
    mul(r4, r5)
    add(r3, r3, r4)
    ldrb(r4, [r0, 7])
    ldrb(r5, [r1, 7])
    mul(r4, r5)
    add(r3, r3, r4)
    add(r0, 8)
    add(r1, 8)
    cmp(r0, r6)
    bcc(MAC)
    pop({r0})
    str(r3, [r2, 0])
    add(r2, 4)
    cmp(r2, r7)
    bcc(ROW)
    mov(r0, 0)  # returned as a small int: no heap allocation on any board
