# The cell's kernels for Thumb boards (RP2040: Cortex-M0+, armv6m), in
# MicroPython's inline assembler. kernels.py uses them when the board is ARM and
# keeps its viper kernels elsewhere (ESP32, the unix port); flash sends this
# file to ARM boards only. A 16-bit state runs matvec16 for h and the same
# lstm_update, which reads the widths from the meta words. Measured on the
# emulated RP2040, an H=32, I=6 timestep: 56,617 cycles with these against
# 209,597 with the viper kernels (bench/rp2040_cycles.py); 56,972 with an 8-bit
# and 57,580 with a 16-bit state, 57,644 with int16 inputs too (bench/state16.py,
# other inputs; 127,589 when the 16-bit lstm_update was viper). The host runs the machine code on an
# emulated Cortex-M against numpy and the viper kernels (tests/armv6m.py,
# tests/test_device_thumb.py); tests/test_rp2040.py holds the cell to the
# reference on the official firmware.
#
# Only r0-r7 serve most instructions. r8-r11 are callee-saved and nothing saves
# them for us: each kernel saves and restores them itself. Encodings the
# assembler has no mnemonic or operand form for are written with data():
#   sxth Rd, Rm                    0xB200 | Rm << 3 | Rd
#   ldr Rt, [Rn, Rm]               0x5800 | Rm << 6 | Rn << 3 | Rt
#   add Rd, Rm (Rd low, Rm r8-r11) 0x4400 | Rm << 3 | Rd
#   cmp Rn, Rm (Rn low, Rm r8-r11) 0x4500 | Rm << 3 | Rn
# The assembler's names (r0, label, ldrb, str...) are not Python's:
# pyright: reportUndefinedVariable=false, reportArgumentType=false, reportCallIssue=false
import micropython


@micropython.asm_thumb
def matvec(r0, r1, r2, r3):
    # out[r] = sum_j x[j] * w[r * n + j] as int32, for bytes x[0..n) and
    # w[0..rows*n), n a multiple of 8 and >= 8, rows >= 1 (kernels.matvec_viper's
    # contract). r0 = x, r1 = w, r2 = out, r3 = n | rows << 16.
    # Two rows per pass: each x byte is loaded once for both (5.4 cycles per MAC
    # against 6.6 one row at a time).
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    mov(r8, r0)  # r8: x
    lsl(r4, r3, 16)
    lsr(r4, r4, 16)
    mov(r9, r4)  # r9: n
    lsr(r3, r3, 16)
    lsl(r3, r3, 2)
    add(r3, r3, r2)
    mov(r10, r3)  # r10: end of out
    mov(r11, r2)  # r11: next output
    label(PAIR)
    mov(r3, r11)
    add(r3, 4)
    mov(r4, r10)
    cmp(r3, r4)
    bcs(ONE)  # fewer than two rows left
    mov(r0, r8)
    mov(r7, r9)
    add(r2, r1, r7)  # r2: the second row's weights
    add(r7, r0, r7)  # r7: end of x
    mov(r3, 0)
    mov(r4, 0)
    label(MAC2)
    ldrb(r5, [r0, 0])
    ldrb(r6, [r1, 0])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 0])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 1])
    ldrb(r6, [r1, 1])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 1])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 2])
    ldrb(r6, [r1, 2])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 2])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 3])
    ldrb(r6, [r1, 3])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 3])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 4])
    ldrb(r6, [r1, 4])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 4])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 5])
    ldrb(r6, [r1, 5])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 5])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 6])
    ldrb(r6, [r1, 6])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 6])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrb(r5, [r0, 7])
    ldrb(r6, [r1, 7])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 7])
    mul(r6, r5)
    add(r4, r4, r6)
    add(r0, 8)
    add(r1, 8)
    add(r2, 8)
    cmp(r0, r7)
    bcc(MAC2)
    mov(r1, r2)  # past the second row: the next pair's first
    mov(r5, r11)
    str(r3, [r5, 0])
    str(r4, [r5, 4])
    add(r5, 8)
    mov(r11, r5)
    b(PAIR)
    label(ONE)
    mov(r3, r11)
    mov(r4, r10)
    cmp(r3, r4)
    bcs(DONE)
    mov(r0, r8)  # the odd last row, one at a time
    mov(r7, r9)
    add(r7, r0, r7)
    mov(r3, 0)
    label(MAC1)
    ldrb(r5, [r0, 0])
    ldrb(r6, [r1, 0])
    mul(r6, r5)
    add(r3, r3, r6)
    add(r0, 1)
    add(r1, 1)
    cmp(r0, r7)
    bcc(MAC1)
    mov(r5, r11)
    str(r3, [r5, 0])
    label(DONE)
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)
    mov(r0, 0)  # returned as a small int: no heap allocation on any board


@micropython.asm_thumb
def lstm_update(r0, r1, r2, r3):
    # kernels.lstm_update_viper, step for step (docs/arithmetic.md), for either
    # state width (meta M_XW, M_HW: 1 or 2 bytes per stored x, h): gate
    # pre-activations from the two matvecs' dot products, the gate tables, then
    # c and h of every unit. r0 = arena, r1 = meta (kernels.M_* words), r2 = the
    # State's address, r3 = x's address. Five passes, so each loop fits the eight
    # low registers:
    #   1. xs, hs: sums of the stored x and h (the offset corrections)
    #   2. per gate row: z = sat16(requant(dx) + requant(dh)) + 32768
    #   3. z of gates i, f, o through the sigmoid table, g through tanh (in place)
    #   4. per unit: c = sat16(f c + i g), and tanh's input from c into i's slot
    #   5. that slot through tanh; h = sat8(o tanh(c)) + 128, or sat16 + 32768
    # Passes 2 and 5 have a loop per width, so the 8-bit state pays nothing for
    # the 16-bit one. The four arguments stay on the stack as a frame: [sp]
    # arena, [sp+4] meta, [sp+8] state, [sp+12] x, read with mov(rN, sp) then ldr.
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    push({r0, r1, r2, r3})
    # -- 1. r8 = -xs = -128 sum x[0..ip), r9 = -hs = -128 sum h[0..hp)
    ldr(r4, [r1, 12])  # M_IP, from r3 = x
    ldr(r6, [r1, 60])  # M_XW
    bl(SUM)
    mov(r8, r5)
    ldr(r3, [r1, 40])  # M_HU
    add(r3, r3, r2)
    ldr(r4, [r1, 20])  # M_HP
    ldr(r6, [r1, 64])  # M_HW
    bl(SUM)
    mov(r9, r5)
    # -- 2. per row (6 words: Kx, Mx, Sx | Px << 8, Kh, Mh, Sh | Ph << 8):
    #    z = sat16(requant((dx + Kx - xs) >> Px) + requant((dh + Kh - hs) >> Ph)) + 32768,
    #    requant(a) = (a M + 2^(S-1)) >> S. Register shifts read only the low byte
    #    of their count: a shift word shifts by S as it is.
    ldr(r3, [r1, 48])  # M_DX
    ldr(r6, [r1, 52])  # M_DH
    sub(r6, r6, r3)  # r6: dh - dx, ldr's register offset from dx[r]
    add(r4, r3, r2)  # r4: dx[r]
    ldr(r5, [r1, 8])  # M_ROWS
    add(r5, r5, r0)  # r5: row constants
    ldr(r7, [r1, 56])  # M_Z
    add(r7, r7, r2)  # r7: z[r]
    mov(r3, 128)
    lsl(r3, r3, 8)
    mov(r10, r3)  # r10: 32768
    ldr(r3, [r1, 16])  # M_H
    lsl(r3, r3, 3)  # 4 H rows of 2 bytes
    add(r3, r3, r7)
    mov(r11, r3)  # r11: end of z
    ldr(r3, [r1, 64])  # M_HW
    cmp(r3, 2)
    beq(ROW16)
    label(ROW)  # an 8-bit state: every P is 0 (blob.pre_shifts), no pre-shift
    ldr(r0, [r4, 0])  # dx
    ldr(r1, [r5, 0])  # Kx
    add(r0, r0, r1)
    data(2, 0x4400 | 8 << 3 | 0)  # add r0, r8: - xs
    ldr(r1, [r5, 4])  # Mx
    mul(r0, r1)
    ldr(r2, [r5, 8])  # Sx
    mov(r1, 1)
    lsl(r1, r2)
    lsr(r1, r1, 1)
    add(r0, r0, r1)
    asr(r0, r2)
    data(2, 0x5800 | 6 << 6 | 4 << 3 | 1)  # ldr r1, [r4, r6]: dh
    ldr(r2, [r5, 12])  # Kh
    add(r1, r1, r2)
    data(2, 0x4400 | 9 << 3 | 1)  # add r1, r9: - hs
    ldr(r2, [r5, 16])  # Mh
    mul(r1, r2)
    ldr(r2, [r5, 20])  # Sh
    mov(r3, 1)
    lsl(r3, r2)
    lsr(r3, r3, 1)
    add(r1, r1, r3)
    asr(r1, r2)
    add(r0, r0, r1)
    data(2, 0x4400 | 10 << 3 | 0)  # add r0, r10: + 32768, in range when 0 <= z <= 65535
    lsr(r1, r0, 16)
    beq(ROW_OK)
    asr(r0, r0, 31)  # out of range: below -> 0, above -> 65535
    mvn(r0, r0)
    lsr(r0, r0, 16)
    label(ROW_OK)
    strh(r0, [r7, 0])
    add(r4, 4)
    add(r5, 24)
    add(r7, 2)
    data(2, 0x4500 | 11 << 3 | 7)  # cmp r7, r11
    bcc(ROW)
    b(GATES)
    label(ROW16)  # ROW with the pre-shifts of a 16-bit state
    ldr(r0, [r4, 0])  # dx
    ldr(r1, [r5, 0])  # Kx
    add(r0, r0, r1)
    data(2, 0x4400 | 8 << 3 | 0)  # add r0, r8: - xs
    ldr(r2, [r5, 8])  # Sx | Px << 8
    lsr(r1, r2, 8)
    asr(r0, r1)  # >> Px
    ldr(r1, [r5, 4])  # Mx
    mul(r0, r1)
    mov(r1, 1)
    lsl(r1, r2)
    lsr(r1, r1, 1)
    add(r0, r0, r1)
    asr(r0, r2)
    data(2, 0x5800 | 6 << 6 | 4 << 3 | 1)  # ldr r1, [r4, r6]: dh
    ldr(r2, [r5, 12])  # Kh
    add(r1, r1, r2)
    data(2, 0x4400 | 9 << 3 | 1)  # add r1, r9: - hs
    ldr(r2, [r5, 20])  # Sh | Ph << 8
    lsr(r3, r2, 8)
    asr(r1, r3)  # >> Ph
    ldr(r3, [r5, 16])  # Mh
    mul(r1, r3)
    mov(r3, 1)
    lsl(r3, r2)
    lsr(r3, r3, 1)
    add(r1, r1, r3)
    asr(r1, r2)
    add(r0, r0, r1)
    data(2, 0x4400 | 10 << 3 | 0)  # add r0, r10: + 32768
    lsr(r1, r0, 16)
    beq(ROW16_OK)
    asr(r0, r0, 31)
    mvn(r0, r0)
    lsr(r0, r0, 16)
    label(ROW16_OK)
    strh(r0, [r7, 0])
    add(r4, 4)
    add(r5, 24)
    add(r7, 2)
    data(2, 0x4500 | 11 << 3 | 7)  # cmp r7, r11
    bcc(ROW16)
    # -- 3. the gate tables: mask and half of the interpolation in r8, r9
    label(GATES)
    mov(r0, sp)
    ldr(r1, [r0, 4])  # meta
    ldr(r7, [r1, 28])  # M_LS: r7 = ls for LUT
    mov(r2, 1)
    lsl(r2, r7)
    sub(r2, 1)
    mov(r8, r2)  # r8: mask
    add(r2, 1)
    lsr(r2, r2, 1)
    mov(r9, r2)  # r9: half
    ldr(r4, [r1, 56])  # M_Z
    ldr(r2, [r0, 8])  # state
    add(r4, r4, r2)
    mov(r10, r4)  # r10: z
    ldr(r5, [r1, 16])  # M_H
    lsl(r5, r5, 1)
    mov(r11, r5)  # r11: 2 H, the bytes of one gate's block of z
    ldr(r6, [r1, 32])  # M_SIG
    ldr(r3, [r0, 0])  # arena
    add(r6, r6, r3)
    lsl(r5, r5, 1)
    add(r5, r5, r4)  # gates i and f
    bl(LUT)
    mov(r0, sp)
    ldr(r1, [r0, 4])
    ldr(r6, [r1, 36])  # M_TANH
    ldr(r3, [r0, 0])
    add(r6, r6, r3)
    mov(r5, r11)
    add(r5, r5, r4)  # gate g
    bl(LUT)
    mov(r0, sp)
    ldr(r1, [r0, 4])
    ldr(r6, [r1, 32])  # M_SIG
    ldr(r3, [r0, 0])
    add(r6, r6, r3)
    mov(r5, r11)
    add(r5, r5, r4)  # gate o
    bl(LUT)
    # -- 4. per unit n: c = sat16(((f c + 2^14) >> 15) + ((i g + 2^(29-cf)) >> (30-cf))),
    #    then u = tanh's input (c at Q3.12, saturated) + 32768 into i's slot
    mov(r0, sp)
    ldr(r1, [r0, 4])
    ldr(r3, [r1, 24])  # M_CF
    mov(r2, 29)
    sub(r2, r2, r3)
    mov(r4, 1)
    lsl(r4, r2)
    mov(r8, r4)  # r8: 2^(29-cf)
    add(r2, 1)
    mov(r9, r2)  # r9: 30 - cf
    mov(r4, 0)  # r10: 2^(cf-13) when cf > 12 (then r11 = cf - 12, a right shift), else 0 (r11 = 12 - cf, left)
    mov(r2, r3)
    sub(r2, 12)
    bgt(CF_RIGHT)
    neg(r2, r2)
    b(CF_SET)
    label(CF_RIGHT)
    sub(r5, r2, 1)
    mov(r4, 1)
    lsl(r4, r5)
    label(CF_SET)
    mov(r10, r4)
    mov(r11, r2)
    ldr(r4, [r1, 56])  # M_Z
    ldr(r5, [r1, 44])  # M_C
    ldr(r2, [r0, 8])
    add(r4, r4, r2)  # r4: z[n] (gate i; f, g at +2H, +4H)
    add(r5, r5, r2)  # r5: c[n]
    ldr(r6, [r1, 16])
    lsl(r6, r6, 1)  # r6: 2 H
    add(r7, r4, r6)  # r7: end of gate i's block
    label(CELL)
    ldrh(r0, [r4, 0])
    data(2, 0xB200 | 0 << 3 | 0)  # sxth r0, r0: i
    add(r1, r4, r6)
    ldrh(r2, [r1, 0])
    data(2, 0xB200 | 2 << 3 | 2)  # sxth r2, r2: f
    add(r1, r1, r6)
    ldrh(r3, [r1, 0])
    data(2, 0xB200 | 3 << 3 | 3)  # sxth r3, r3: g
    mul(r0, r3)
    mov(r3, r8)
    add(r0, r0, r3)
    mov(r3, r9)
    asr(r0, r3)  # (i g + 2^(29-cf)) >> (30-cf)
    ldrh(r3, [r5, 0])
    data(2, 0xB200 | 3 << 3 | 3)  # sxth r3, r3: c
    mul(r3, r2)
    mov(r2, 64)
    lsl(r2, r2, 8)
    add(r3, r3, r2)
    asr(r3, r3, 15)  # (f c + 2^14) >> 15
    add(r0, r0, r3)
    lsl(r2, r2, 1)  # 32768
    add(r0, r0, r2)
    lsr(r1, r0, 16)
    beq(C_OK)
    asr(r0, r0, 31)
    mvn(r0, r0)
    lsr(r0, r0, 16)
    label(C_OK)
    sub(r0, r0, r2)  # c, saturated
    strh(r0, [r5, 0])
    mov(r1, r10)
    cmp(r1, 0)
    beq(C_LEFT)
    add(r0, r0, r1)  # cf > 12: round, shift right; always in range
    mov(r1, r11)
    asr(r0, r1)
    b(C_SCALED)
    label(C_LEFT)
    mov(r1, r11)
    lsl(r0, r1)
    label(C_SCALED)
    add(r0, r0, r2)
    lsr(r1, r0, 16)
    beq(U_OK)
    asr(r0, r0, 31)
    mvn(r0, r0)
    lsr(r0, r0, 16)
    label(U_OK)
    strh(r0, [r4, 0])
    add(r4, 2)
    add(r5, 2)
    cmp(r4, r7)
    bcc(CELL)
    # -- 5. tanh of that, then h = sat8((o t + 2^22) >> 23) + 128 (HID), or
    #    sat16((o t + 2^14) >> 15) + 32768 (HID16)
    mov(r0, sp)
    ldr(r1, [r0, 4])
    ldr(r7, [r1, 28])  # M_LS
    mov(r2, 1)
    lsl(r2, r7)
    sub(r2, 1)
    mov(r8, r2)
    add(r2, 1)
    lsr(r2, r2, 1)
    mov(r9, r2)
    ldr(r6, [r1, 36])  # M_TANH
    ldr(r3, [r0, 0])
    add(r6, r6, r3)
    ldr(r4, [r1, 56])
    ldr(r2, [r0, 8])
    add(r4, r4, r2)
    ldr(r5, [r1, 16])
    lsl(r5, r5, 1)
    add(r5, r5, r4)
    bl(LUT)
    mov(r0, sp)
    ldr(r1, [r0, 4])
    ldr(r2, [r0, 8])
    ldr(r3, [r1, 64])  # M_HW
    ldr(r4, [r1, 56])  # M_Z
    add(r4, r4, r2)  # r4: tanh(c)[n]
    ldr(r5, [r1, 40])  # M_HU
    add(r5, r5, r2)  # r5: h[n]
    ldr(r6, [r1, 16])
    lsl(r6, r6, 1)
    add(r7, r4, r6)  # r7: end
    add(r1, r6, r6)
    add(r6, r6, r1)
    add(r6, r6, r4)  # r6: o[n], 6 H bytes on
    cmp(r3, 2)
    beq(HID16)
    label(HID)
    ldrh(r0, [r4, 0])
    data(2, 0xB200 | 0 << 3 | 0)  # sxth r0, r0
    ldrh(r1, [r6, 0])
    data(2, 0xB200 | 1 << 3 | 1)  # sxth r1, r1
    mul(r0, r1)
    mov(r1, 1)
    lsl(r1, r1, 22)
    add(r0, r0, r1)
    asr(r0, r0, 23)
    add(r0, 128)
    lsr(r1, r0, 8)
    beq(H_OK)
    asr(r0, r0, 31)
    mvn(r0, r0)
    lsr(r0, r0, 24)
    label(H_OK)
    strb(r0, [r5, 0])
    add(r4, 2)
    add(r5, 1)
    add(r6, 2)
    cmp(r4, r7)
    bcc(HID)
    b(EXIT)
    label(HID16)
    ldrh(r0, [r4, 0])
    data(2, 0xB200 | 0 << 3 | 0)  # sxth r0, r0
    ldrh(r1, [r6, 0])
    data(2, 0xB200 | 1 << 3 | 1)  # sxth r1, r1
    mul(r0, r1)
    mov(r1, 1)
    lsl(r1, r1, 14)
    add(r0, r0, r1)
    asr(r0, r0, 15)
    lsl(r1, r1, 1)
    add(r0, r0, r1)  # + 32768
    lsr(r1, r0, 16)
    beq(H16_OK)
    asr(r0, r0, 31)
    mvn(r0, r0)
    lsr(r0, r0, 16)
    label(H16_OK)
    strh(r0, [r5, 0])
    add(r4, 2)
    add(r5, 2)
    add(r6, 2)
    cmp(r4, r7)
    bcc(HID16)
    b(EXIT)
    # LUT: z[r4..r5) (uint16 table positions) -> int16 table values, in place:
    # v = T[u >> ls] + (((T[(u >> ls) + 1] - T[u >> ls]) (u & mask) + half) >> ls)
    # r6 = T, r7 = ls, r8 = mask, r9 = half; clobbers r0-r4
    label(LUT)
    ldrh(r0, [r4, 0])
    mov(r1, r0)
    lsr(r1, r7)
    lsl(r1, r1, 1)
    add(r1, r1, r6)
    ldrh(r2, [r1, 0])
    ldrh(r3, [r1, 2])
    data(2, 0xB200 | 2 << 3 | 2)  # sxth r2, r2
    data(2, 0xB200 | 3 << 3 | 3)  # sxth r3, r3
    sub(r3, r3, r2)
    mov(r1, r8)
    and_(r1, r0)
    mul(r3, r1)
    mov(r1, r9)
    add(r3, r3, r1)
    asr(r3, r7)
    add(r2, r2, r3)
    strh(r2, [r4, 0])
    add(r4, 2)
    cmp(r4, r5)
    bcc(LUT)
    bx(lr)
    # SUM: r5 = -128 * the sum of r4 stored values from r3, bytes or (r6 = 2)
    # uint16; clobbers r3, r4, r6
    label(SUM)
    mov(r5, 0)
    cmp(r6, 2)
    beq(SUM16)
    add(r4, r4, r3)
    label(SUM8)
    ldrb(r6, [r3, 0])
    add(r5, r5, r6)
    add(r3, 1)
    cmp(r3, r4)
    bcc(SUM8)
    b(SUMMED)
    label(SUM16)
    add(r4, r4, r4)
    add(r4, r4, r3)
    label(SUM16_NEXT)
    ldrh(r6, [r3, 0])
    add(r5, r5, r6)
    add(r3, 2)
    cmp(r3, r4)
    bcc(SUM16_NEXT)
    label(SUMMED)
    lsl(r5, r5, 7)
    neg(r5, r5)
    bx(lr)
    label(EXIT)
    pop({r0, r1, r2, r3})
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)
    mov(r0, 0)


# A kernel_thumb older than the 16-bit lstm_update lacks this name: kernels._pick16
# then keeps lstm_update_viper for a 16-bit state.
lstm_update16 = lstm_update


@micropython.asm_thumb
def matvec16(r0, r1, r2, r3):
    # matvec over a 16-bit state's inputs (kernels.matvec16_viper's contract):
    # out[r] = sum_j x[j] * w[r * n + j] for uint16 x[0..n) (h + 32768) and bytes
    # w, n a multiple of 8, 8..128 (the sums' int32 proof), rows >= 1. matvec,
    # step for step, with halfword loads of x (ldrh) and x's end at x + 2n.
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    mov(r8, r0)  # r8: x
    lsl(r4, r3, 16)
    lsr(r4, r4, 16)
    mov(r9, r4)  # r9: n
    lsr(r3, r3, 16)
    lsl(r3, r3, 2)
    add(r3, r3, r2)
    mov(r10, r3)  # r10: end of out
    mov(r11, r2)  # r11: next output
    label(PAIR)
    mov(r3, r11)
    add(r3, 4)
    mov(r4, r10)
    cmp(r3, r4)
    bcs(ONE)  # fewer than two rows left
    mov(r0, r8)
    mov(r7, r9)
    add(r2, r1, r7)  # r2: the second row's weights
    add(r7, r7, r7)
    add(r7, r0, r7)  # r7: end of x
    mov(r3, 0)
    mov(r4, 0)
    label(MAC2)
    ldrh(r5, [r0, 0])
    ldrb(r6, [r1, 0])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 0])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 2])
    ldrb(r6, [r1, 1])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 1])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 4])
    ldrb(r6, [r1, 2])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 2])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 6])
    ldrb(r6, [r1, 3])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 3])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 8])
    ldrb(r6, [r1, 4])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 4])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 10])
    ldrb(r6, [r1, 5])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 5])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 12])
    ldrb(r6, [r1, 6])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 6])
    mul(r6, r5)
    add(r4, r4, r6)
    ldrh(r5, [r0, 14])
    ldrb(r6, [r1, 7])
    mul(r6, r5)
    add(r3, r3, r6)
    ldrb(r6, [r2, 7])
    mul(r6, r5)
    add(r4, r4, r6)
    add(r0, 16)
    add(r1, 8)
    add(r2, 8)
    cmp(r0, r7)
    bcc(MAC2)
    mov(r1, r2)  # past the second row: the next pair's first
    mov(r5, r11)
    str(r3, [r5, 0])
    str(r4, [r5, 4])
    add(r5, 8)
    mov(r11, r5)
    b(PAIR)
    label(ONE)
    mov(r3, r11)
    mov(r4, r10)
    cmp(r3, r4)
    bcs(DONE)
    mov(r0, r8)  # the odd last row, one at a time
    mov(r7, r9)
    add(r7, r7, r7)
    add(r7, r0, r7)
    mov(r3, 0)
    label(MAC1)
    ldrh(r5, [r0, 0])
    ldrb(r6, [r1, 0])
    mul(r6, r5)
    add(r3, r3, r6)
    add(r0, 2)
    add(r1, 1)
    cmp(r0, r7)
    bcc(MAC1)
    mov(r5, r11)
    str(r3, [r5, 0])
    label(DONE)
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)
    mov(r0, 0)  # returned as a small int: no heap allocation on any board
