/*
 * exitcount: a QEMU TCG plugin (plugin API version 1, QEMU 7.2) that counts, per guest pc,
 * the x86 instructions that WOULD cause a VM exit under Intel VMX with KVM's default
 * settings.  Under TCG there are no VM exits: these are MODELLED exits
 * (accelerator "tcg-modelled" in the guestio exits table).
 *
 * What counts as an exit
 *   pio_in / pio_out   IN/OUT/INS/OUTS, decoded from the instruction bytes (prefixes
 *                      0x66, 0xf2/0xf3, segment overrides, 0x67, lock, REX).  Port I/O never
 *                      reaches the memory callbacks.  E4-E7 carry the port (imm8) and it is
 *                      recorded; EC-EF and 6C-6F take it from DX, which API v1 cannot read:
 *                      the port stays unknown here (see guestio.tcgexits: the optional
 *                      sequence log, zipped with QEMU's memory_region_ops_* trace events,
 *                      recovers it).  REP INS/OUTS: every iteration is one execution of the
 *                      instruction under TCG and is counted; the "starts" column counts only
 *                      the first iteration of each run (what KVM's string-PIO emulation turns
 *                      into roughly one exit per page of data).
 *   mmio_read/_write   any guest load/store whose TLB entry is MMIO (qemu_plugin_hwaddr_is_io),
 *                      with the physical address and the memory region's name.  This includes
 *                      the local APIC (region "apic-msi" at 0xfee00000: a plain I/O region of
 *                      system memory under TCG in QEMU 7.2) and the IOAPIC/HPET.  Which
 *                      instructions are watched and how cheaply: see "Cost" below.
 *   hlt                F4
 *   cpuid              0F A2
 *   msr_read/_write    0F 32 / 0F 30: ALL of them are counted.  KVM passes some MSRs through
 *                      (FS/GS/KERNEL_GS base, SYSENTER_*, TSC reads, SPEC_CTRL...) but the MSR
 *                      number is in ECX, which API v1 cannot read: recorded as unknown.
 *   hypercall          VMCALL 0F 01 C1, VMMCALL 0F 01 D9
 *   other              XSETBV 0F 01 D1, INVD 0F 08, WBINVD 0F 09, MONITOR 0F 01 C8,
 *                      MWAIT 0F 01 C9, GETSEC 0F 37 (unconditional or default-on exits).
 *   Not modelled: external interrupts, EPT violations, exceptions, MOV CR/DR (with EPT,
 *   TPR shadow and guest-owned CR4 bits the common ones do not exit), PAUSE loops.
 *
 * Operand size of the word/dword port forms (E5/E7/ED/EF/6D/6F): 4 bytes, 2 with 0x66, in
 * 64-bit and 32-bit code.  Code below 1 MiB (firmware, the kernel's real-mode setup) may be
 * 16-bit, where the meaning of 0x66 is inverted: its size is recorded as 0 (unknown).
 * REX is recognised without knowing the CPU mode: API v1 gives the exact bytes of ONE
 * instruction, and 0x40-0x4F can only be followed by more bytes of the same instruction in
 * 64-bit mode (in 32-bit mode it is a complete one-byte INC/DEC).
 *
 * Calling function: a shadow call stack.
 *   CALL (E8, FF /2) and RET (C3, C2 iw) get a memory callback: the CALL's push (a store) and
 *   the RET's pop (a load) give the virtual address of the return-address SLOT, i.e. the
 *   stack pointer, without reading registers.  Frames are {slot, call-site pc}.
 *   - Live frames are strictly above the stack pointer, so at a CALL whose slot is v every
 *     frame with slot <= v is dead (abandoned by an exception, longjmp-like unwinding, a
 *     task that died and whose stack was reused...) and is dropped before pushing; at a RET
 *     from slot v every frame with slot < v is dropped and the frame with slot == v, if any,
 *     is popped (a matched return).  A RET whose slot is not on the stack pops nothing
 *     beyond the dead frames.  This needs no special case for retpolines
 *     (call/mov %rax,(%rsp)/ret), return thunks, or a context switch.
 *   - IRET (CF, 48 CF) pops its frame through a helper whose loads reach the plugin's memory
 *     callback; the first load is RIP at the stack pointer (later ones include GDT
 *     descriptors, ignored): every frame below it is dead and is dropped.  This matters for
 *     the kernel's interrupt entry: error_entry is CALLed but moves its return address to
 *     a lower slot (PUSH_AND_CLEAR_REGS save_ret=1) before RET, so the CALL's frame is never
 *     matched; without the IRET rule it would stay on top after the interrupt returns and
 *     an exit in the interrupted function would be attributed to asm_sysvec_*.
 *     SYSRET/SYSEXIT need nothing: they return to user mode (see the user/kernel rule).
 *   - There is one shadow stack per guest stack: stacks are keyed by slot >> 14 (16 KiB,
 *     the x86-64 THREAD_SIZE; task stacks are THREAD_SIZE aligned under VMAP_STACK).  A
 *     CALL/RET slot within 4 KiB below/above the current stack's top continues that stack
 *     even across a 16 KiB boundary (the IRQ stack is only page aligned); the stack is then
 *     also registered under the new key.  Context switches (__switch_to_asm returns on the
 *     next task's stack), interrupts (IRQ stack) and user/kernel transitions therefore land
 *     on the right shadow stack at the next CALL or RET.
 *   - The current stack of a vCPU is the one of its last CALL/RET.  An exit instruction is
 *     attributed to the top frame of that stack: the call site that entered the current
 *     function (tail calls and inlining are invisible: the site is then the one that
 *     entered the tail-calling/enclosing function).  No caller (empty) when the stack is
 *     empty or when the exit pc and the stack are on different sides of the user/kernel
 *     split (an exit between an iret/sysret to user mode and the next user CALL/RET).
 *   - Depth cap 512 frames per stack (the oldest frame is dropped), 65536 stacks (all are
 *     dropped when exceeded).
 *
 * Phases: the plugin follows the guest's serial console log itself (argument serial=PATH, the
 * file QEMU's file chardev writes).  QEMU's 16550 writes every byte to the file synchronously
 * in the vCPU thread when the guest executes the OUT to the transmit register, so the plugin
 * sees a console line at the next port I/O instruction after its newline (the 8250 driver
 * reads LSR/IIR right after transmitting): the phase boundary is exact to within a few guest
 * instructions and needs nothing from the guest beyond the console lines guestio already
 * prints.  Lines (anywhere in a console line):
 *     start of the run                  -> phase "boot"
 *     "GUESTIO: init started"           -> phase "init"
 *     "GUESTIO: job started"            -> phase "benchmark"
 *     "GUESTIO: phase NAME"             -> phase NAME   ([A-Za-z0-9_.:-]{1,63}; a job writes it
 *                                          to /dev/console or /dev/kmsg, e.g.
 *                                          echo "GUESTIO: phase write" >/dev/kmsg)
 *     "GUESTIO: job finished"           -> phase "shutdown"
 *   Without serial=, everything is phase "boot".  The log is polled at port-I/O executions
 *   only, and only at the first one after an OUT (the file grows only when an OUT executes;
 *   one read() that usually returns 0); the console's own port I/O guarantees one right
 *   after every line.  /dev/kmsg rate-limits user writes (10 lines per 5 s by
 *   default): a job should mark a handful of windows, not hundreds.
 *
 * Arguments: out=PATH (required: the CSV), serial=PATH, seq=on|off (default off: when on,
 *   every port-I/O and MMIO execution and every phase switch is written, in execution order,
 *   to QEMU's log with qemu_plugin_outs: run QEMU with "-d plugin -D LOG" and the trace events
 *   memory_region_ops_read/_write, and the log interleaves the plugin's records with QEMU's
 *   own view of the same accesses, see guestio.tcgexits).
 *
 * Output CSV (written at exit, atomically):
 *   phase,pc,kind,detail,port_or_address,size,caller_site_pc,device,count,starts
 *   pc, port_or_address, caller_site_pc in hex (0x...), empty when unknown; size in bytes
 *   (0 = unknown); device: QEMU's memory-region name for MMIO (',' '"' and line breaks
 *   replaced by '_').  Rows with kind "insns" give the executed guest instructions of each
 *   phase (count) and the translated-block executions (starts), for context.  At exit a
 *   line of shadow-stack statistics goes to stderr (calls, returns, matched returns).
 *
 * QEMU 7.2 bug worked around: a memory callback registered for QEMU_PLUGIN_MEM_R alone is
 *   never called for loads (accel/tcg/plugin-gen.c op_rw() tests cb->rw & (rw + 1), where rw is
 *   already 1 for a load and 2 for a store: loads only reach callbacks that include W, stores
 *   reach all).  Every memory callback here is registered as QEMU_PLUGIN_MEM_RW and checks
 *   qemu_plugin_mem_is_store() itself, which reports the access correctly.
 *
 * Cost (about 1.6x an untraced run, was 3.1x: workflow/bench/pipeline.md).  A guest run
 * makes ~10^9 loads and stores, most of them REP MOVS/STOS iterations (initramfs unpacking,
 * page poisoning, copy_user) and the kernel decompressor's; every one that can reach MMIO
 * must be looked at, and a memory callback that calls qemu_plugin_get_hwaddr() costs ~8 ns.
 *   1. No memory callback where the decoded operand cannot be MMIO (decode_mem,
 *      may_touch_mmio): no data access, the stack (PUSH/POP/ENTER/LEAVE/INT..., rsp-based
 *      operands), rip-relative operands (64-bit code: the kernel's or a program's image),
 *      %gs-based operands in the kernel (per-CPU data), absolute addresses in the kernel
 *      image/module area below the fixmap (the local APIC lives in the fixmap).  Register-
 *      based operands, string instructions, moffs, XLAT and anything not decoded keep theirs.
 *      Roughly a tenth of all accesses.
 *   2. A per-vCPU cache of guest pages QEMU's TLB called RAM, keyed by page and
 *      qemu_plugin_meminfo_t (which holds the MMU index and load/store): a hit returns
 *      without calling into QEMU; a miss asks qemu_plugin_get_hwaddr() and remembers RAM
 *      (never MMIO).  The cache is forgotten (a generation bump) whenever QEMU's translation
 *      may change: before every modelled exit (port I/O may remap memory: PCI BARs, PAM,
 *      SMRAM, A20; WRMSR: EFER, APIC base; HLT), after every MMIO access, before MOV to
 *      CR/DR, INVLPG, INVPCID, LMSW, RSM, WRPKRU, XRSTOR(S), the SVM instructions and far
 *      transfers/INT/IRET (task switches) (decode_flush), when the vCPU idles or resumes
 *      and on a TB flush.  What this assumes: (a) no other QEMU thread changes the memory
 *      map during the run (guestio's runs only send QMP cont/quit), (b) the guest never
 *      re-points a present page from RAM to MMIO without a TLB flush (Linux flushes on
 *      unmap; not-present pages are never cached).  Exactness is still what the traced
 *      cross-check measures; a self-check build verifies every hit: see Build.
 *   3. Shadow-stack callbacks without hash lookups on the common path (a stack remembers
 *      the key it is registered under, a vCPU its recent key -> stack lookups; both checked
 *      against an epoch bumped whenever the key table is remapped or cleared), without the
 *      mutex when QEMU has a single vCPU, and without the load/store test for CALL rel32 /
 *      CALL *%reg / RET (one access each).
 *   4. The console log is read at the first port I/O after an OUT (it only grows then), not
 *      at every port I/O (most are ACPI PM timer reads).
 *
 * Threading: one mutex protects the tables and the shadow stacks (tasks migrate between
 * vCPUs, so the shadow stacks are global; with one vCPU the shadow stacks go unlocked, see
 * Cost); per-vCPU state, including the RAM-page cache, is indexed by vcpu_index.  The
 * instruction/TB counters are inline adds to one global counter: exact for one vCPU (guestio
 * runs one), approximate with several.
 *
 * Build: gcc -shared -fPIC -O2 $(pkg-config --cflags glib-2.0) -I<dir of qemu-plugin.h>
 *        exitcount.c -o libexitcount.so $(pkg-config --libs glib-2.0)
 * Decoder self-test build: gcc -DEXITCOUNT_DECODER_TEST -O2 exitcount.c -o exitcount-decode
 *        (reads hex instruction bytes, one instruction a line, prints the decoding; -m: the
 *        memory-operand class and the translation-changing flag instead).
 * Self-check build: the plugin build plus -DEXITCOUNT_SELFCHECK: every RAM-cache hit is
 *        redone with qemu_plugin_get_hwaddr() and every cached stack lookup with the hash
 *        table; at exit stderr says how many were wrong ("exitcount: selfcheck: ...").
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Instruction decoder (pure C, also built stand-alone for the tests)                   */

#define KERNEL_SPLIT 0x8000000000000000ULL   /* upper half: the kernel */
#define LEGACY_PC_LIMIT 0x100000ULL          /* below 1 MiB: firmware, maybe 16-bit code */

enum ex_kind {
    K_NONE = 0,
    K_PIO_IN, K_PIO_OUT, K_MMIO_READ, K_MMIO_WRITE, K_HLT, K_CPUID, K_MSR_READ,
    K_MSR_WRITE, K_HYPERCALL, K_OTHER,
    K_INSNS,            /* pseudo kind: per-phase instruction totals */
    K_CALL, K_RET, K_IRET,   /* control flow for the shadow stack, not exits */
    K__N
};

static const char *const kind_names[K__N] = {
    [K_NONE] = "none", [K_PIO_IN] = "pio_in", [K_PIO_OUT] = "pio_out",
    [K_MMIO_READ] = "mmio_read", [K_MMIO_WRITE] = "mmio_write", [K_HLT] = "hlt",
    [K_CPUID] = "cpuid", [K_MSR_READ] = "msr_read", [K_MSR_WRITE] = "msr_write",
    [K_HYPERCALL] = "hypercall", [K_OTHER] = "other", [K_INSNS] = "insns",
    [K_CALL] = "call", [K_RET] = "ret", [K_IRET] = "iret",
};

enum ex_detail {
    D_NONE = 0,
    D_IN_IMM8, D_IN_DX, D_INS, D_REP_INS, D_OUT_IMM8, D_OUT_DX, D_OUTS, D_REP_OUTS,
    D_VMCALL, D_VMMCALL, D_XSETBV, D_INVD, D_WBINVD, D_MONITOR, D_MWAIT, D_GETSEC,
    D__N
};

static const char *const detail_names[D__N] = {
    [D_NONE] = "", [D_IN_IMM8] = "in_imm8", [D_IN_DX] = "in_dx", [D_INS] = "ins",
    [D_REP_INS] = "rep_ins", [D_OUT_IMM8] = "out_imm8", [D_OUT_DX] = "out_dx",
    [D_OUTS] = "outs", [D_REP_OUTS] = "rep_outs", [D_VMCALL] = "vmcall",
    [D_VMMCALL] = "vmmcall", [D_XSETBV] = "xsetbv", [D_INVD] = "invd",
    [D_WBINVD] = "wbinvd", [D_MONITOR] = "monitor", [D_MWAIT] = "mwait",
    [D_GETSEC] = "getsec",
};

struct decoded {
    int kind;      /* enum ex_kind */
    int detail;    /* enum ex_detail */
    int size;      /* port access size in bytes, 0 = unknown (16-bit code) */
    int port;      /* imm8 port, -1 if in DX / not port I/O */
    bool rep;      /* REP prefix on INS/OUTS */
};

/*
 * Decode one instruction of n bytes.  legacy16: the code may be 16-bit (pc below 1 MiB), so
 * the word/dword port forms have an unknown size.  Returns d->kind (K_NONE if not of interest).
 */
static int decode_insn(const uint8_t *b, size_t n, bool legacy16, struct decoded *d)
{
    size_t i = 0;
    bool opsize = false, rep = false;
    int dwsize;

    d->kind = K_NONE;
    d->detail = D_NONE;
    d->size = 0;
    d->port = -1;
    d->rep = false;

    for (; i < n; i++) {
        uint8_t p = b[i];
        if (p == 0x66) {
            opsize = true;
        } else if (p == 0xf2 || p == 0xf3) {
            rep = true;
        } else if (p == 0xf0 || p == 0x67 || p == 0x2e || p == 0x36 || p == 0x3e ||
                   p == 0x26 || p == 0x64 || p == 0x65) {
            /* lock, address size, segment overrides: no effect on what we record */
        } else if ((p & 0xf0) == 0x40 && i + 1 < n) {
            /* REX (64-bit mode only; see the header comment).  REX.W does not widen port
             * I/O, and an REX followed by a legacy prefix is ignored by the CPU. */
        } else {
            break;
        }
    }
    if (i >= n) {
        return K_NONE;
    }
    dwsize = legacy16 ? 0 : (opsize ? 2 : 4);

    switch (b[i]) {
    case 0xe4: case 0xe5: case 0xe6: case 0xe7:
        if (i + 1 >= n) {
            return K_NONE;
        }
        d->kind = (b[i] & 2) ? K_PIO_OUT : K_PIO_IN;
        d->detail = (b[i] & 2) ? D_OUT_IMM8 : D_IN_IMM8;
        d->size = (b[i] & 1) ? dwsize : 1;
        d->port = b[i + 1];
        break;
    case 0xec: case 0xed: case 0xee: case 0xef:
        d->kind = (b[i] & 2) ? K_PIO_OUT : K_PIO_IN;
        d->detail = (b[i] & 2) ? D_OUT_DX : D_IN_DX;
        d->size = (b[i] & 1) ? dwsize : 1;
        break;
    case 0x6c: case 0x6d: case 0x6e: case 0x6f:
        d->kind = (b[i] & 2) ? K_PIO_OUT : K_PIO_IN;
        d->rep = rep;
        d->detail = (b[i] & 2) ? (rep ? D_REP_OUTS : D_OUTS) : (rep ? D_REP_INS : D_INS);
        d->size = (b[i] & 1) ? dwsize : 1;
        break;
    case 0xf4:
        d->kind = K_HLT;
        break;
    case 0xe8:
        d->kind = K_CALL;
        break;
    case 0xff:
        if (i + 1 < n && ((b[i + 1] >> 3) & 7) == 2) {
            d->kind = K_CALL;
        }
        break;
    case 0xc3: case 0xc2:
        d->kind = K_RET;
        break;
    case 0xcf:
        d->kind = K_IRET;
        break;
    case 0x0f:
        if (i + 1 >= n) {
            return K_NONE;
        }
        switch (b[i + 1]) {
        case 0xa2: d->kind = K_CPUID; break;
        case 0x32: d->kind = K_MSR_READ; break;
        case 0x30: d->kind = K_MSR_WRITE; break;
        case 0x08: d->kind = K_OTHER; d->detail = D_INVD; break;
        case 0x09: d->kind = K_OTHER; d->detail = D_WBINVD; break;
        case 0x37: d->kind = K_OTHER; d->detail = D_GETSEC; break;
        case 0x01:
            if (i + 2 >= n) {
                return K_NONE;
            }
            switch (b[i + 2]) {
            case 0xc1: d->kind = K_HYPERCALL; d->detail = D_VMCALL; break;
            case 0xd9: d->kind = K_HYPERCALL; d->detail = D_VMMCALL; break;
            case 0xd1: d->kind = K_OTHER; d->detail = D_XSETBV; break;
            case 0xc8: d->kind = K_OTHER; d->detail = D_MONITOR; break;
            case 0xc9: d->kind = K_OTHER; d->detail = D_MWAIT; break;
            }
            break;
        }
        break;
    }
    return d->kind;
}

/*
 * Where the data accesses of one instruction can go: the addressing of its memory operand.
 * Only what is needed to decide whether the instruction could touch MMIO is decoded: the
 * prefixes, the opcode (1-byte, 0F, 0F 38, 0F 3A, VEX), the ModRM, SIB and displacement
 * bytes.  Immediates and instruction lengths are not needed (QEMU gives the exact bytes of
 * one instruction).  Anything not understood is MC_UNKNOWN.
 */
enum mem_class {
    MC_UNKNOWN = 0,  /* not decoded: could access anything */
    MC_NONE,         /* no data access (register forms, LEA, NOP/prefetch hints, branches) */
    MC_STACK,        /* implicit stack accesses only (PUSH/POP reg/imm, ENTER/LEAVE, PUSHF...) */
    MC_RSP,          /* explicit operand at rsp/esp + displacement (+ index) */
    MC_RIP,          /* rip-relative operand (64-bit code) */
    MC_ABS,          /* absolute disp32, sign-extended (SIB without base), maybe + index */
    MC_FS, MC_GS,    /* fs:/gs:-prefixed explicit operand */
    MC_STRING,       /* MOVS/STOS/LODS/CMPS/SCAS/INS/OUTS: addresses in rsi/rdi */
    MC_REG,          /* operand based on any other register, moffs, XLAT */
    MC__N
};

static const char *const mem_class_names[MC__N] __attribute__((unused)) = {
    [MC_UNKNOWN] = "unknown", [MC_NONE] = "none", [MC_STACK] = "stack", [MC_RSP] = "rsp",
    [MC_RIP] = "rip", [MC_ABS] = "abs", [MC_FS] = "fs", [MC_GS] = "gs",
    [MC_STRING] = "string", [MC_REG] = "reg",
};

/* Code modes for decode_mem */
enum { CODE_MAYBE16 = 16, CODE_32OR64 = 32, CODE_64 = 64 };

struct memop {
    int cls;         /* enum mem_class */
    uint64_t disp;   /* MC_ABS: the address (sign-extended disp32) */
    bool index;      /* MC_ABS: plus an index register */
};

/* ModRM presence, 1-byte map: 1 = ModRM, 0 = none, 2 = handled specially. */
static const uint8_t modrm1[256] = {
    /*       0 1 2 3 4 5 6 7 8 9 a b c d e f */
    /* 0 */  1,1,1,1,0,0,0,0,1,1,1,1,0,0,0,2,
    /* 1 */  1,1,1,1,0,0,0,0,1,1,1,1,0,0,0,0,
    /* 2 */  1,1,1,1,0,0,0,0,1,1,1,1,0,0,0,0,
    /* 3 */  1,1,1,1,0,0,0,0,1,1,1,1,0,0,0,0,
    /* 4 */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* 5 */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* 6 */  0,0,2,1,0,0,0,0,0,1,0,1,0,0,0,0,
    /* 7 */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* 8 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* 9 */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* a */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* b */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* c */  1,1,0,0,2,2,1,1,0,0,0,0,0,0,0,0,
    /* d */  1,1,1,1,0,0,0,0,1,1,1,1,1,1,1,1,
    /* e */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* f */  0,0,0,0,0,0,1,1,0,0,0,0,0,0,1,1,
};

/* 0F map: 1 = ModRM, 0 = none, 2 = 3-byte escape, 3 = undefined. */
static const uint8_t modrm2[256] = {
    /*       0 1 2 3 4 5 6 7 8 9 a b c d e f */
    /* 0 */  1,1,1,1,3,0,0,0,0,0,3,0,3,1,0,1,
    /* 1 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* 2 */  1,1,1,1,3,3,3,3,1,1,1,1,1,1,1,1,
    /* 3 */  0,0,0,0,0,0,0,0,2,3,2,3,3,3,3,3,
    /* 4 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* 5 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* 6 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* 7 */  1,1,1,1,1,1,1,0,1,1,1,1,1,1,1,1,
    /* 8 */  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    /* 9 */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* a */  0,0,0,1,1,1,3,3,0,0,0,1,1,1,1,1,
    /* b */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* c */  1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,
    /* d */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* e */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    /* f */  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
};

/*
 * Classify the memory operand of one instruction of n bytes.  mode: CODE_64 (the code is
 * 64-bit, e.g. pc in the upper half), CODE_32OR64 (32- or 64-bit: rip-relative and absolute
 * disp32 cannot be told apart without a REX prefix; 0x67 may select 16-bit addressing),
 * CODE_MAYBE16 (pc below 1 MiB: 16-bit addressing is possible, explicit operands stay
 * MC_REG).  Returns m->cls.
 */
static int decode_mem(const uint8_t *b, size_t n, int mode, struct memop *m)
{
    size_t i = 0;
    bool addr67 = false, rexb = false, rexx = false, vex = false, legacy_seg = false;
    int seg = 0;            /* 0x64 (fs), 0x65 (gs) or 0 */
    int map = 1;            /* 1: 1-byte map, 2: 0F, 3: 0F 38, 4: 0F 3A */
    uint8_t op;

    m->cls = MC_UNKNOWN;
    m->disp = 0;
    m->index = false;

    for (; i < n; i++) {
        uint8_t p = b[i];
        if ((p & 0xf0) == 0x40 && i + 1 < n) {
            mode = CODE_64;                /* only 64-bit code has REX (see decode_insn) */
            rexb = p & 1;
            rexx = p & 2;
            continue;
        }
        if (p == 0x64 || p == 0x65) {
            seg = p;
        } else if (p == 0x67) {
            addr67 = true;
        } else if (p == 0x2e || p == 0x36 || p == 0x3e || p == 0x26) {
            legacy_seg = true;             /* ignored in 64-bit code, a real base elsewhere */
        } else if (!(p == 0x66 || p == 0xf2 || p == 0xf3 || p == 0xf0)) {
            break;
        }
        rexb = rexx = false;               /* a legacy prefix after a REX voids the REX */
    }
    if (i >= n) {
        return m->cls;
    }
    op = b[i++];

    if (op == 0xc4 || op == 0xc5) {
        /* VEX in 64-bit code; in 32-bit code only when the next byte has mod 11 (else
         * LES/LDS); real mode has no VEX. */
        if (i >= n) {
            return m->cls;
        }
        if (!(mode == CODE_64 || (mode == CODE_32OR64 && (b[i] & 0xc0) == 0xc0))) {
            if (mode == CODE_32OR64 || (b[i] & 0xc0) == 0xc0) {
                return m->cls;             /* LES/LDS or a VEX of 64-bit code; VEX in 16-bit */
            }
            goto modrm;                    /* LES/LDS in possibly 16-bit code */
        }
        if (op == 0xc5) {
            rexb = rexx = false;           /* 2-byte VEX: map 0F, R only */
            map = 2;
            i += 1;
        } else {
            uint8_t mm = b[i] & 0x1f;
            rexb = !(b[i] & 0x20);
            rexx = !(b[i] & 0x40);
            if (mm < 1 || mm > 3) {
                return m->cls;
            }
            map = mm + 1;
            i += 2;
        }
        if (i >= n) {
            return m->cls;
        }
        op = b[i++];
        vex = true;
        if (map == 2 && op == 0x77) {
            m->cls = MC_NONE;              /* VZEROUPPER/VZEROALL */
            return m->cls;
        }
        goto modrm;                        /* every other VEX instruction has a ModRM */
    }
    if (op == 0x62) {
        return m->cls;                     /* EVEX (64-bit) or BOUND: not decoded */
    }
    if (op == 0x0f) {
        if (i >= n) {
            return m->cls;
        }
        op = b[i++];
        switch (modrm2[op]) {
        case 0:
            /* PUSH/POP fs/gs; the rest (jcc, syscall, cpuid, rdtsc, rdmsr, bswap, ...)
             * accesses no data */
            m->cls = (op == 0xa0 || op == 0xa1 || op == 0xa8 || op == 0xa9) ? MC_STACK : MC_NONE;
            return m->cls;
        case 2:
            map = op == 0x38 ? 3 : 4;
            if (i >= n) {
                return m->cls;
            }
            op = b[i++];                   /* the third opcode byte */
            break;
        case 3:
            return m->cls;
        default:
            map = 2;
            break;
        }
        goto modrm;
    }
    if (!modrm1[op]) {
        if ((op >= 0x50 && op <= 0x5f) || op == 0x68 || op == 0x6a || op == 0x9c ||
            op == 0x9d || op == 0xc8 || op == 0xc9 || op == 0x06 || op == 0x07 ||
            op == 0x0e || op == 0x16 || op == 0x17 || op == 0x1e || op == 0x1f ||
            op == 0x60 || op == 0x61 || op == 0xc2 || op == 0xc3 || op == 0xca ||
            op == 0xcb || op == 0xe8 || op == 0xcc || op == 0xcd || op == 0xce ||
            op == 0xf1 || op == 0xcf || op == 0x9a || op == 0xea) {
            /* PUSH/POP, PUSHF/POPF, ENTER/LEAVE, near/far CALL/RET, INT, IRET, far JMP: the
             * stack (and the IDT/GDT, system RAM) */
            m->cls = MC_STACK;
        } else if ((op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf) ||
                   (op >= 0x6c && op <= 0x6f)) {
            m->cls = MC_STRING;
        } else if ((op >= 0xa0 && op <= 0xa3) || op == 0xd7) {
            m->cls = MC_REG;               /* MOV moffs, XLAT */
        } else if (op >= 0x40 && op <= 0x4f && i < n) {
            m->cls = MC_UNKNOWN;           /* cannot happen: a REX is a prefix */
        } else {
            m->cls = MC_NONE;
        }
        return m->cls;
    }

modrm:
    if (i >= n) {
        return m->cls;
    }
    uint8_t modrm = b[i++];
    int mod = modrm >> 6, reg = (modrm >> 3) & 7, rm = modrm & 7;
    /* Implicit or unusual addresses despite the ModRM: MASKMOVQ/MASKMOVDQU store at rdi
     * (register operands), MOVDIR64B/ENQCMD store at the register of ModRM.reg, VSIB gathers
     * add a vector index, MPX BNDLDX/BNDSTX use a bound table, the SVM instructions and
     * CLZERO use rax. */
    if ((map == 2 && (op == 0xf7 || op == 0x1a || op == 0x1b)) ||
        (map == 3 && (op == 0xf8 || (vex && op >= 0x90 && op <= 0x93))) ||
        (map == 2 && op == 0x01 && mod == 3 && ((modrm >= 0xd8 && modrm <= 0xdf) ||
                                                 modrm == 0xfc))) {
        m->cls = MC_REG;
        return m->cls;
    }
    if (map == 1 && op == 0x8f && reg != 0) {
        return m->cls;                     /* AMD XOP */
    }
    if (mod == 3) {
        /* register operand; CALL/PUSH %reg (FF /2, /6) and POP %reg (8F /0) use the stack */
        m->cls = (map == 1 && ((op == 0xff && (reg == 2 || reg == 6)) || op == 0x8f))
                 ? MC_STACK : MC_NONE;
        return m->cls;
    }
    if (map == 1 && op == 0x8d) {
        m->cls = MC_NONE;                  /* LEA computes an address, accesses nothing */
        return m->cls;
    }
    if (mode == CODE_MAYBE16 || addr67 || (legacy_seg && mode != CODE_64)) {
        m->cls = MC_REG;   /* 16- or 32-bit addressing, or a CS/DS/ES/SS base: not decoded */
        return m->cls;
    }
    if (seg) {
        m->cls = seg == 0x64 ? MC_FS : MC_GS;
        return m->cls;
    }
    if (rm == 4) {
        if (i >= n) {
            return m->cls;
        }
        uint8_t sib = b[i++];
        int base = sib & 7, index = ((sib >> 3) & 7) | (rexx ? 8 : 0);
        if (base == 5 && mod == 0) {
            if (i + 4 > n) {
                return m->cls;
            }
            if (mode != CODE_64) {
                m->cls = MC_REG;           /* 32-bit code: a zero-extended disp32 */
                return m->cls;
            }
            uint32_t d = (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 |
                         (uint32_t)b[i + 3] << 24;
            m->cls = MC_ABS;
            m->disp = (uint64_t)(int64_t)(int32_t)d;
            m->index = index != 4;
            return m->cls;
        }
        m->cls = (base == 4 && !rexb) ? MC_RSP : MC_REG;
        return m->cls;
    }
    if (rm == 5 && mod == 0) {
        m->cls = mode == CODE_64 ? MC_RIP : MC_REG;    /* 32-bit code: absolute disp32 */
        return m->cls;
    }
    m->cls = MC_REG;
    return m->cls;
}

/*
 * Can the instruction change how QEMU translates addresses, other than through a modelled
 * exit (port I/O, WRMSR, HLT...) or an MMIO access?  MOV to CR0/CR3/CR4 (and CR8, DR: cheap
 * to include), INVLPG, INVPCID, LMSW, RSM (leaves SMM), WRPKRU, XRSTOR/XRSTORS (may load
 * PKRU), the SVM instructions, and the far transfers that can switch tasks outside long
 * mode (far JMP/CALL/RET, INT, IRET).  QEMU flushes its TLB on all of these.
 */
static bool decode_flush(const uint8_t *b, size_t n)
{
    size_t i = 0;
    uint8_t op;

    while (i < n && (b[i] == 0x66 || b[i] == 0x67 || b[i] == 0xf2 || b[i] == 0xf3 ||
                     b[i] == 0xf0 || b[i] == 0x2e || b[i] == 0x36 || b[i] == 0x3e ||
                     b[i] == 0x26 || b[i] == 0x64 || b[i] == 0x65 ||
                     ((b[i] & 0xf0) == 0x40 && i + 1 < n))) {
        i++;
    }
    if (i >= n) {
        return false;
    }
    op = b[i++];
    switch (op) {
    case 0x9a: case 0xea: case 0xca: case 0xcb:     /* far CALL/JMP/RET */
    case 0xcc: case 0xcd: case 0xce: case 0xf1:     /* INT3, INT n, INTO, INT1 */
    case 0xcf:                                      /* IRET */
        return true;
    case 0xff:                                      /* far CALL/JMP through memory */
        return i < n && (((b[i] >> 3) & 7) == 3 || ((b[i] >> 3) & 7) == 5);
    case 0x0f:
        break;
    default:
        return false;
    }
    if (i >= n) {
        return false;
    }
    op = b[i++];
    switch (op) {
    case 0x22: case 0x23:                           /* MOV to CRn / DRn */
    case 0xaa:                                      /* RSM */
        return true;
    case 0x38:                                      /* INVPCID (66 0F 38 82) */
        return i < n && b[i] == 0x82;
    case 0x01:
        if (i >= n) {
            return false;
        }
        if ((b[i] >> 6) != 3) {
            return ((b[i] >> 3) & 7) == 7 || ((b[i] >> 3) & 7) == 6;   /* INVLPG, LMSW */
        }
        return ((b[i] >> 3) & 7) == 6 ||                              /* LMSW %reg */
               (b[i] >= 0xd8 && b[i] <= 0xdf) || b[i] == 0xef;        /* SVM, WRPKRU */
    case 0xae:                                      /* XRSTOR */
        return i < n && (b[i] >> 6) != 3 && ((b[i] >> 3) & 7) == 5;
    case 0xc7:                                      /* XRSTORS */
        return i < n && (b[i] >> 6) != 3 && ((b[i] >> 3) & 7) == 3;
    default:
        return false;
    }
}

/*
 * Can the data accesses of an instruction (at pc, decoded by decode_mem) reach MMIO?  Not:
 * no data access; the stack (implicit, or rsp-based); rip-relative (the kernel's or a
 * program's own image); %gs-based in the kernel (per-CPU data); absolute addresses in the
 * kernel image and module area [0xffffffff80000000, 0xffffffffff000000) -- the fixmap
 * above it holds the local APIC and early ioremaps.  Everything else may.
 */
static bool may_touch_mmio(uint64_t pc, const struct memop *m)
{
    switch (m->cls) {
    case MC_NONE:
    case MC_STACK:
    case MC_RSP:
    case MC_RIP:
        return false;
    case MC_GS:
        return pc < KERNEL_SPLIT;
    case MC_ABS:
        return !(m->disp >= 0xffffffff80000000ULL && m->disp < 0xffffffffff000000ULL);
    default:
        return true;
    }
}

/* What decode_mem may assume about the code at pc: upper-half and above-4-GiB code is
 * 64-bit; below 1 MiB it may be 16-bit (firmware, real-mode setup). */
static int code_mode(uint64_t pc)
{
    if (pc < LEGACY_PC_LIMIT) {
        return CODE_MAYBE16;
    }
    return pc >= (1ULL << 32) ? CODE_64 : CODE_32OR64;
}

#ifdef EXITCOUNT_DECODER_TEST
/* ------------------------------------------------------------------------------------ */
/* Stand-alone decoder test: "hexbytes [16]" per line -> "kind detail size port rep"     */

/*
 * Without arguments each line is one instruction, "hexbytes [16]", printed as
 * "kind detail size port rep" (decode_insn; 16: code below 1 MiB).  With -m each line is
 * "hexbytes [m16|m32|m64] [@pc]" and prints "class [address index] [flush] watch|skip":
 * decode_mem's class (with the address and index flag for class abs), "flush" when
 * decode_flush says the instruction may change QEMU's address translation, and whether the
 * plugin puts a memory callback on it (may_touch_mmio).  The code mode defaults to the one
 * of pc (code_mode), pc to 0xffffffff81000000 (kernel text), the mode without pc to 64.
 */
int main(int argc, char **argv)
{
    char line[512];
    bool mem = argc > 1 && strcmp(argv[1], "-m") == 0;
    while (fgets(line, sizeof line, stdin)) {
        uint8_t buf[32];
        size_t n = 0;
        int mode = 0;
        bool have_pc = false;
        uint64_t pc = 0xffffffff81000000ULL;
        char *s = line;
        struct decoded d;
        struct memop mo;
        while (*s && *s != '\n') {
            unsigned v;
            int used;
            while (*s == ' ' || *s == '\t') {
                s++;
            }
            if (!*s || *s == '\n') {
                break;
            }
            if (*s == '@') {
                pc = strtoull(s + 1, &s, 16);
                have_pc = true;
                continue;
            }
            if (mem && *s == 'm') {
                mode = (int)strtol(s + 1, &s, 10);
                continue;
            }
            if (!mem && n > 0 && strncmp(s, "16", 2) == 0 &&
                (s[2] == '\n' || s[2] == 0 || s[2] == ' ')) {
                mode = 16;
                s += 2;
                continue;
            }
            if (sscanf(s, "%2x%n", &v, &used) != 1 || n >= sizeof buf) {
                printf("error\n");
                n = 0;
                break;
            }
            buf[n++] = (uint8_t)v;
            s += used;
        }
        if (mem) {
            int cmode = mode == 16 ? CODE_MAYBE16 : mode == 32 ? CODE_32OR64 :
                        mode == 64 ? CODE_64 : have_pc ? code_mode(pc) : CODE_64;
            decode_mem(buf, n, cmode, &mo);
            if (mo.cls == MC_ABS) {
                printf("abs %" PRIx64 " %d", mo.disp, mo.index ? 1 : 0);
            } else {
                printf("%s", mem_class_names[mo.cls]);
            }
            printf("%s %s\n", decode_flush(buf, n) ? " flush" : "",
                   may_touch_mmio(pc, &mo) ? "watch" : "skip");
        } else {
            decode_insn(buf, n, mode == 16, &d);
            printf("%s %s %d %d %d\n", kind_names[d.kind],
                   d.detail ? detail_names[d.detail] : "-", d.size, d.port, d.rep ? 1 : 0);
        }
        fflush(stdout);
    }
    return 0;
}

#else
/* ------------------------------------------------------------------------------------ */
/* The plugin                                                                            */

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define NOADDR UINT64_MAX
#define MAX_PHASES 256
#define MAX_DEPTH 512
#define MAX_STACKS 65536
#define STACK_SHIFT 14          /* 16 KiB: x86-64 THREAD_SIZE */
#define STACK_NEAR 4096         /* continuation across a STACK_SHIFT boundary */

/* Per-instruction data handed to the exec callback (interned by pc + bytes). */
typedef struct {
    uint64_t pc;
    struct decoded d;
    uint8_t len;
    uint8_t bytes[16];
} InsnInfo;

typedef struct {
    uint64_t pc, addr, caller;
    uint32_t phase;
    uint8_t kind, detail, size, pad;
} CKey;

typedef struct {
    uint64_t count, starts;
    const char *device;
} CVal;

typedef struct {
    uint64_t slot, site;
} Frame;

typedef struct {
    Frame *f;
    int n, cap;
    /* stacks[alias_key] == this stack, known since stacks_epoch was alias_epoch */
    uint64_t alias_key, alias_epoch;
} SStack;

/* A vCPU's recent (key -> stack) lookups, valid while stacks_epoch == epoch. */
#define FAR_N 16
typedef struct {
    uint64_t key, epoch;
    SStack *s;
} FarEnt;

/* One entry of a vCPU's RAM-page cache (see cb_mem). */
typedef struct {
    uint64_t tag;        /* guest virtual page (vaddr & RAMC_PAGE_MASK) | the vCPU's ram_gen */
    uint32_t info;       /* the access's qemu_plugin_meminfo_t (mmu index, load/store, size) */
} RamEnt;

#define RAMC_BITS 10
#define RAMC_N (1u << RAMC_BITS)
#define RAMC_PAGE_MASK (~(uint64_t)0xfff)   /* TARGET_PAGE_SIZE of x86: QEMU's TLB granule */
#define RAMC_GEN_MAX 0xfffu                 /* the generation lives in the page offset bits */

typedef struct {
    SStack *cur;
    uint64_t last_rep_pc, last_rep_tb;
    bool iret_pending;   /* an IRET is executing: its first load is the stack pointer */
    FarEnt far[FAR_N];
    uint64_t ram_gen;    /* 1..RAMC_GEN_MAX, bumped whenever QEMU's translation may change */
    RamEnt ram[RAMC_N];  /* pages QEMU's TLB said were RAM; valid if tagged with ram_gen */
} VCpu;

static GMutex lock;
static GHashTable *counts;       /* CKey* -> CVal* */
static GHashTable *insn_infos;   /* InsnInfo* -> same (interning) */
static GHashTable *stacks;       /* key (slot >> STACK_SHIFT) -> SStack* (aliases allowed) */
static GPtrArray *all_stacks;    /* owns the SStacks */
static uint64_t stacks_epoch = 1; /* bumped whenever a key of stacks is remapped or dropped */
#ifdef EXITCOUNT_SELFCHECK
/* the self-check build: every RAM-cache hit and cached stack lookup is redone and compared */
static uint64_t check_ram_hits, check_ram_wrong, check_stack_hits, check_stack_wrong;
#endif
static VCpu *vcpus;
static int n_vcpus;
static bool multi_vcpu;           /* more than one vCPU thread may run callbacks */

static uint64_t insn_total, tb_total;     /* inline counters */
static uint64_t n_calls, n_rets, n_rets_matched, n_dead_frames;   /* shadow-stack statistics */
static char *phase_names[MAX_PHASES];
static uint64_t phase_insns[MAX_PHASES], phase_tbs[MAX_PHASES];
static int n_phases, cur_phase;
static uint64_t phase_mark_insns, phase_mark_tbs;

static char *out_path, *serial_path;
static bool seq_on;
static int serial_fd = -1;
static char serial_line[4096];
static size_t serial_len;
static bool serial_overlong;
static bool serial_maybe_new = true;   /* an OUT executed since the last poll */

/* -- counting ---------------------------------------------------------------------- */

static guint ckey_hash(gconstpointer p)
{
    const CKey *k = p;
    uint64_t h = k->pc * 0x9e3779b97f4a7c15ULL;
    h ^= (k->addr + 0x632be59bd9b4e019ULL) * 0xbf58476d1ce4e5b9ULL;
    h ^= (k->caller + 0x94d049bb133111ebULL) * 0x94d049bb133111ebULL;
    h ^= ((uint64_t)k->phase << 24) ^ ((uint64_t)k->kind << 16) ^ ((uint64_t)k->detail << 8)
         ^ k->size;
    return (guint)(h ^ (h >> 32));
}

static gboolean ckey_equal(gconstpointer a, gconstpointer b)
{
    const CKey *x = a, *y = b;
    return x->pc == y->pc && x->addr == y->addr && x->caller == y->caller &&
           x->phase == y->phase && x->kind == y->kind && x->detail == y->detail &&
           x->size == y->size;
}

static void count_locked(uint64_t pc, int kind, int detail, int size, uint64_t addr,
                         uint64_t caller, bool start, const char *device)
{
    CKey k = { .pc = pc, .addr = addr, .caller = caller, .phase = (uint32_t)cur_phase,
               .kind = (uint8_t)kind, .detail = (uint8_t)detail, .size = (uint8_t)size };
    CVal *v = g_hash_table_lookup(counts, &k);
    if (!v) {
        CKey *nk = g_new(CKey, 1);
        *nk = k;
        v = g_new0(CVal, 1);
        v->device = device;
        g_hash_table_insert(counts, nk, v);
    }
    v->count++;
    if (start) {
        v->starts++;
    }
}

/* -- phases -------------------------------------------------------------------------- */

static int phase_index(const char *name)
{
    for (int i = 0; i < n_phases; i++) {
        if (strcmp(phase_names[i], name) == 0) {
            return i;
        }
    }
    if (n_phases >= MAX_PHASES) {
        return -1;
    }
    phase_names[n_phases] = g_strdup(name);
    return n_phases++;
}

static void close_phase_locked(void)
{
    uint64_t ni = insn_total, nt = tb_total;
    phase_insns[cur_phase] += ni - phase_mark_insns;
    phase_tbs[cur_phase] += nt - phase_mark_tbs;
    phase_mark_insns = ni;
    phase_mark_tbs = nt;
}

static void switch_phase_locked(const char *name)
{
    int idx = phase_index(name);
    if (idx < 0 || idx == cur_phase) {
        return;
    }
    close_phase_locked();
    cur_phase = idx;
    if (seq_on) {
        g_autofree char *s = g_strdup_printf("exitcount: phase %s\n", name);
        qemu_plugin_outs(s);
    }
}

static void serial_line_done(void)
{
    static const char *const fixed[][2] = {
        { "GUESTIO: init started", "init" },
        { "GUESTIO: job started", "benchmark" },
        { "GUESTIO: job finished", "shutdown" },
    };
    const char *p;

    serial_line[serial_len] = 0;
    if (!serial_overlong) {
        for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++) {
            if (strstr(serial_line, fixed[i][0])) {
                switch_phase_locked(fixed[i][1]);
                goto done;
            }
        }
        p = strstr(serial_line, "GUESTIO: phase ");
        if (p) {
            char name[64];
            size_t n = 0;
            p += strlen("GUESTIO: phase ");
            while (n < sizeof name - 1 && (g_ascii_isalnum(p[n]) || p[n] == '_' ||
                                           p[n] == '.' || p[n] == ':' || p[n] == '-')) {
                name[n] = p[n];
                n++;
            }
            name[n] = 0;
            if (n > 0) {
                switch_phase_locked(name);
            }
        }
    }
done:
    serial_len = 0;
    serial_overlong = false;
}

/* Read what the console wrote since the last call; called at every port-I/O execution. */
static void poll_serial_locked(void)
{
    char buf[4096];
    ssize_t got;

    if (!serial_path) {
        return;
    }
    if (serial_fd < 0) {
        serial_fd = open(serial_path, O_RDONLY | O_CLOEXEC);
        if (serial_fd < 0) {
            return;
        }
    }
    while ((got = read(serial_fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            char c = buf[i];
            if (c == '\n') {
                serial_line_done();
            } else if (c != '\r') {
                if (serial_len < sizeof serial_line - 1) {
                    serial_line[serial_len++] = c;
                } else {
                    serial_overlong = true;
                }
            }
        }
    }
}

/* -- shadow call stacks -------------------------------------------------------------- */

static SStack *stack_for_key_locked(uint64_t key)
{
    SStack *s = g_hash_table_lookup(stacks, (gpointer)(uintptr_t)key);
    if (!s) {
        if (all_stacks->len >= MAX_STACKS) {
            g_hash_table_remove_all(stacks);
            stacks_epoch++;
            for (guint i = 0; i < all_stacks->len; i++) {
                SStack *o = g_ptr_array_index(all_stacks, i);
                g_free(o->f);
                g_free(o);
            }
            g_ptr_array_set_size(all_stacks, 0);
            for (int i = 0; i < n_vcpus; i++) {
                vcpus[i].cur = NULL;
            }
        }
        s = g_new0(SStack, 1);
        g_ptr_array_add(all_stacks, s);
        g_hash_table_insert(stacks, (gpointer)(uintptr_t)key, s);
    }
    return s;
}

/* The shadow stack a CALL/RET with return-address slot v belongs to. */
static SStack *stack_for_slot_locked(VCpu *vc, uint64_t v)
{
    uint64_t key = v >> STACK_SHIFT;
    SStack *cur = vc->cur;
    if (cur && cur->n > 0) {
        uint64_t top = cur->f[cur->n - 1].slot;
        if ((v <= top && top - v <= STACK_NEAR) || (v > top && v - top <= STACK_NEAR)) {
#ifdef EXITCOUNT_SELFCHECK
            check_stack_hits++;
            if (cur->alias_key == key && cur->alias_epoch == stacks_epoch &&
                g_hash_table_lookup(stacks, (gpointer)(uintptr_t)key) != cur) {
                check_stack_wrong++;
            }
#endif
            if (cur->alias_key != key || cur->alias_epoch != stacks_epoch) {
                if (g_hash_table_lookup(stacks, (gpointer)(uintptr_t)key) != cur) {
                    g_hash_table_insert(stacks, (gpointer)(uintptr_t)key, cur);
                    stacks_epoch++;
                }
                cur->alias_key = key;
                cur->alias_epoch = stacks_epoch;
            }
            return cur;
        }
    }
    /* the stack of another key: the same as stack_for_key_locked, remembered per vCPU */
    FarEnt *fe = &vc->far[(key ^ (key >> 4)) & (FAR_N - 1)];
    if (fe->s && fe->key == key && fe->epoch == stacks_epoch) {
#ifdef EXITCOUNT_SELFCHECK
        check_stack_hits++;
        if (g_hash_table_lookup(stacks, (gpointer)(uintptr_t)key) != fe->s) {
            check_stack_wrong++;
        }
#endif
        return fe->s;
    }
    SStack *s = stack_for_key_locked(key);
    fe->key = key;
    fe->s = s;
    fe->epoch = stacks_epoch;
    return s;
}

static void on_call_locked(VCpu *vc, uint64_t slot, uint64_t site)
{
    SStack *s = stack_for_slot_locked(vc, slot);
    while (s->n > 0 && s->f[s->n - 1].slot <= slot) {
        s->n--;                                   /* dead frames */
        n_dead_frames++;
    }
    n_calls++;
    if (s->n == s->cap) {
        if (s->cap < MAX_DEPTH) {
            s->cap = s->cap ? s->cap * 2 : 16;
            s->f = g_renew(Frame, s->f, s->cap);
        } else {
            memmove(s->f, s->f + 1, sizeof(Frame) * (s->n - 1));   /* drop the oldest */
            s->n--;
        }
    }
    s->f[s->n].slot = slot;
    s->f[s->n].site = site;
    s->n++;
    vc->cur = s;
}

static void on_ret_locked(VCpu *vc, uint64_t slot)
{
    SStack *s = stack_for_slot_locked(vc, slot);
    while (s->n > 0 && s->f[s->n - 1].slot < slot) {
        s->n--;                                   /* dead frames */
        n_dead_frames++;
    }
    n_rets++;
    if (s->n > 0 && s->f[s->n - 1].slot == slot) {
        s->n--;                                   /* matched return */
        n_rets_matched++;
    }
    vc->cur = s;
}

/* IRET: its loads start at the stack pointer; every frame below is dead. */
static void on_iret_locked(VCpu *vc, uint64_t slot)
{
    SStack *s = stack_for_slot_locked(vc, slot);
    while (s->n > 0 && s->f[s->n - 1].slot < slot) {
        s->n--;
        n_dead_frames++;
    }
    vc->cur = s;
}

static uint64_t caller_locked(VCpu *vc, uint64_t pc)
{
    SStack *s = vc->cur;
    if (!s || s->n == 0) {
        return NOADDR;
    }
    Frame *top = &s->f[s->n - 1];
    if ((pc >= KERNEL_SPLIT) != (top->slot >= KERNEL_SPLIT)) {
        return NOADDR;
    }
    return top->site;
}

static VCpu *vcpu(unsigned int idx)
{
    return &vcpus[idx < (unsigned)n_vcpus ? idx : 0];
}

static inline RamEnt *ram_slot(VCpu *vc, uint64_t page, uint32_t info)
{
    /* info's load/store bits are above bit 16: fold them down */
    uint64_t h = (page >> 12) ^ info ^ (info >> 13);
    return &vc->ram[h & (RAMC_N - 1)];
}

/* Something may have changed how QEMU translates guest addresses: forget the RAM pages. */
static inline void ram_forget(VCpu *vc)
{
    if (++vc->ram_gen > RAMC_GEN_MAX) {
        memset(vc->ram, 0, sizeof vc->ram);   /* tags of gen 0 match nothing */
        vc->ram_gen = 1;
    }
}

static void cb_flush_exec(unsigned int vcpu_index, void *udata)
{
    ram_forget(vcpu(vcpu_index));
}

/* A vCPU that idled (HLT) may have run queued work (a TLB flush requested by another thread)
 * before it resumes; a TB flush runs with all vCPUs stopped. */
static void cb_vcpu_idle_resume(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    ram_forget(vcpu(vcpu_index));
}

static void cb_tb_flush(qemu_plugin_id_t id)
{
    for (int i = 0; i < n_vcpus; i++) {
        ram_forget(&vcpus[i]);
    }
}

/* -- callbacks ------------------------------------------------------------------------ */

/* The shadow stacks are only touched by vCPU threads: with one vCPU there is nothing to
 * lock against (the CSV is written at exit, after QEMU paused the vCPUs, and does not read
 * them). */
static inline void stack_lock(void)
{
    if (multi_vcpu) {
        g_mutex_lock(&lock);
    }
}

static inline void stack_unlock(void)
{
    if (multi_vcpu) {
        g_mutex_unlock(&lock);
    }
}

/* CALL rel32 / CALL *%reg: the only access is the push of the return address. */
static void cb_call_push(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                         void *udata)
{
    stack_lock();
    on_call_locked(vcpu(vcpu_index), vaddr, (uint64_t)(uintptr_t)udata);
    stack_unlock();
}

/* CALL *mem: a load of the target, then the push. */
static void cb_call_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                        void *udata)
{
    if (!qemu_plugin_mem_is_store(info)) {
        return;                                   /* the load of call *mem */
    }
    cb_call_push(vcpu_index, info, vaddr, udata);
}

/* RET / RET imm16: the only access is the pop of the return address. */
static void cb_ret_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                       void *udata)
{
    stack_lock();
    on_ret_locked(vcpu(vcpu_index), vaddr);
    stack_unlock();
}

static void cb_iret_exec(unsigned int vcpu_index, void *udata)
{
    VCpu *vc = vcpu(vcpu_index);
    vc->iret_pending = true;
    ram_forget(vc);             /* a task switch outside long mode reloads CR3 */
}

/* Only the first load of an IRET is its stack frame (RIP at RSP); later loads include the
 * GDT/LDT descriptors of the new CS/SS, which are no stack. */
static void cb_iret_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                        void *udata)
{
    VCpu *vc = vcpu(vcpu_index);
    if (qemu_plugin_mem_is_store(info) || !vc->iret_pending) {
        return;
    }
    vc->iret_pending = false;
    stack_lock();
    on_iret_locked(vc, vaddr);
    stack_unlock();
}

static void __attribute__((noinline)) cb_mem_slow(unsigned int vcpu_index,
                                                   qemu_plugin_meminfo_t info, uint64_t vaddr,
                                                   void *udata, VCpu *vc0, RamEnt *e,
                                                   uint64_t page)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
    if (!hw) {
        return;
    }
    if (!qemu_plugin_hwaddr_is_io(hw)) {
        e->tag = page | vc0->ram_gen;
        e->info = info;
        return;
    }
    ram_forget(vc0);            /* a device access may remap memory (BARs, PAM, SMRAM...) */
    uint64_t pc = (uint64_t)(uintptr_t)udata;
    uint64_t phys = qemu_plugin_hwaddr_phys_addr(hw);
    bool store = qemu_plugin_mem_is_store(info);
    int size = 1 << qemu_plugin_mem_size_shift(info);
    const char *dev = qemu_plugin_hwaddr_device_name(hw);

    g_mutex_lock(&lock);
    VCpu *vc = vcpu(vcpu_index);
    uint64_t caller = caller_locked(vc, pc);
    count_locked(pc, store ? K_MMIO_WRITE : K_MMIO_READ, D_NONE, size, phys, caller, true,
                 dev);
    if (seq_on) {
        char s[160];
        snprintf(s, sizeof s, "exitcount: M %" PRIx64 " %c %d %" PRIx64 " %" PRIx64 "\n", pc,
                 store ? 'w' : 'r', size, phys, caller == NOADDR ? 0 : caller);
        qemu_plugin_outs(s);
    }
    g_mutex_unlock(&lock);
}

static void cb_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                   void *udata)
{
    VCpu *vc = vcpu(vcpu_index);
    uint64_t page = vaddr & RAMC_PAGE_MASK;
    RamEnt *e = ram_slot(vc, page, info);
    if (__builtin_expect(e->tag == (page | vc->ram_gen) && e->info == info, 1)) {
#ifdef EXITCOUNT_SELFCHECK
        struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
        check_ram_hits++;
        if (hw && qemu_plugin_hwaddr_is_io(hw)) {
            check_ram_wrong++;
            fprintf(stderr, "exitcount: selfcheck: cached RAM page %" PRIx64 " is MMIO at pc %"
                    PRIx64 "\n", vaddr, (uint64_t)(uintptr_t)udata);
        }
#endif
        return;                 /* QEMU said RAM for this page and access type, nothing since */
    }
    cb_mem_slow(vcpu_index, info, vaddr, udata, vc, e, page);
}

static void cb_exit_insn(unsigned int vcpu_index, void *udata)
{
    const InsnInfo *ii = udata;
    const struct decoded *d = &ii->d;
    bool pio = d->kind == K_PIO_IN || d->kind == K_PIO_OUT;
    bool start = true;

    g_mutex_lock(&lock);
    VCpu *vc = vcpu(vcpu_index);
    ram_forget(vc);             /* port I/O, WRMSR, HLT...: may change the memory map */
    if (pio) {
        /* The console file only grows when an OUT executes (QEMU's 16550 writes each byte
         * synchronously): poll at the first port I/O after an OUT.  This OUT's own byte is
         * seen at the next one. */
        if (serial_maybe_new) {
            poll_serial_locked();   /* may switch the phase: this instruction counts there */
        }
        serial_maybe_new = d->kind == K_PIO_OUT;
        if (d->rep) {
            /* Each REP iteration re-executes the instruction as its own TB: a continued run
             * is the same pc exactly one TB execution later. */
            uint64_t tb = tb_total;
            start = !(vc->last_rep_pc == ii->pc && vc->last_rep_tb + 1 == tb);
            vc->last_rep_pc = ii->pc;
            vc->last_rep_tb = tb;
        }
    }
    uint64_t caller = caller_locked(vc, ii->pc);
    count_locked(ii->pc, d->kind, d->detail, d->size, d->port >= 0 ? (uint64_t)d->port : NOADDR,
                 caller, start, NULL);
    if (seq_on && pio) {
        char s[160];
        char port[16] = "-";
        if (d->port >= 0) {
            snprintf(port, sizeof port, "%x", d->port);
        }
        snprintf(s, sizeof s, "exitcount: P %" PRIx64 " %s %d %s %d %" PRIx64 "\n", ii->pc,
                 d->kind == K_PIO_IN ? "in" : "out", d->size, port, d->rep ? 1 : 0,
                 caller == NOADDR ? 0 : caller);
        qemu_plugin_outs(s);
    }
    g_mutex_unlock(&lock);
}

static guint info_hash(gconstpointer p)
{
    const InsnInfo *ii = p;
    guint h = (guint)(ii->pc ^ (ii->pc >> 32)) * 2654435761u;
    for (int i = 0; i < ii->len; i++) {
        h = (h ^ ii->bytes[i]) * 16777619u;
    }
    return h;
}

static gboolean info_equal(gconstpointer a, gconstpointer b)
{
    const InsnInfo *x = a, *y = b;
    return x->pc == y->pc && x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0;
}

static const InsnInfo *intern_info_locked(uint64_t pc, const uint8_t *bytes, size_t len,
                                          const struct decoded *d)
{
    InsnInfo key = { .pc = pc, .len = (uint8_t)MIN(len, sizeof key.bytes) };
    memcpy(key.bytes, bytes, key.len);
    InsnInfo *ii = g_hash_table_lookup(insn_infos, &key);
    if (!ii) {
        ii = g_new(InsnInfo, 1);
        *ii = key;
        ii->d = *d;
        g_hash_table_add(insn_infos, ii);
    }
    return ii;
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_total, n);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &tb_total, 1);

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *bytes = qemu_plugin_insn_data(insn);
        size_t len = qemu_plugin_insn_size(insn);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        void *pcp = (void *)(uintptr_t)pc;
        struct decoded d;

        switch (decode_insn(bytes, len, pc < LEGACY_PC_LIMIT, &d)) {
        case K_CALL: {
            /* RW, not W: see "QEMU 7.2 bug" above; cb_call_mem filters stores. */
            struct memop mo;
            bool push_only = decode_mem(bytes, len, code_mode(pc), &mo) == MC_STACK;
            qemu_plugin_register_vcpu_mem_cb(insn, push_only ? cb_call_push : cb_call_mem,
                                             QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, pcp);
            break;
        }
        case K_RET:
            /* RW, not R: see "QEMU 7.2 bug" above (a RET only loads). */
            qemu_plugin_register_vcpu_mem_cb(insn, cb_ret_mem, QEMU_PLUGIN_CB_NO_REGS,
                                             QEMU_PLUGIN_MEM_RW, pcp);
            break;
        case K_IRET:
            qemu_plugin_register_vcpu_insn_exec_cb(insn, cb_iret_exec, QEMU_PLUGIN_CB_NO_REGS,
                                                   NULL);
            qemu_plugin_register_vcpu_mem_cb(insn, cb_iret_mem, QEMU_PLUGIN_CB_NO_REGS,
                                             QEMU_PLUGIN_MEM_RW, pcp);
            break;
        case K_NONE: {
            struct memop mo;
            if (decode_flush(bytes, len)) {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, cb_flush_exec,
                                                       QEMU_PLUGIN_CB_NO_REGS, NULL);
            }
            decode_mem(bytes, len, code_mode(pc), &mo);
            if (may_touch_mmio(pc, &mo)) {
                qemu_plugin_register_vcpu_mem_cb(insn, cb_mem, QEMU_PLUGIN_CB_NO_REGS,
                                                 QEMU_PLUGIN_MEM_RW, pcp);
            }
            break;
        }
        default: {
            const InsnInfo *ii;
            g_mutex_lock(&lock);
            ii = intern_info_locked(pc, bytes, len, &d);
            g_mutex_unlock(&lock);
            qemu_plugin_register_vcpu_insn_exec_cb(insn, cb_exit_insn, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)ii);
            /* INS/OUTS also touch memory (RAM, normally): keep the MMIO check. */
            qemu_plugin_register_vcpu_mem_cb(insn, cb_mem, QEMU_PLUGIN_CB_NO_REGS,
                                             QEMU_PLUGIN_MEM_RW, pcp);
            break;
        }
        }
    }
}

/* -- output ---------------------------------------------------------------------------- */

/* Memory-region names are free text: keep the CSV well-formed. */
static void put_name(FILE *f, const char *name)
{
    for (const char *c = name ? name : ""; *c; c++) {
        fputc(*c == ',' || *c == '"' || *c == '\n' || *c == '\r' ? '_' : *c, f);
    }
}

static void put_hex(FILE *f, uint64_t v)
{
    if (v != NOADDR) {
        fprintf(f, "0x%" PRIx64, v);
    }
}

static gint row_cmp(gconstpointer a, gconstpointer b)
{
    const CKey *x = *(CKey *const *)a, *y = *(CKey *const *)b;
    if (x->phase != y->phase) return x->phase < y->phase ? -1 : 1;
    if (x->pc != y->pc) return x->pc < y->pc ? -1 : 1;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    if (x->detail != y->detail) return x->detail < y->detail ? -1 : 1;
    if (x->addr != y->addr) return x->addr < y->addr ? -1 : 1;
    if (x->size != y->size) return x->size < y->size ? -1 : 1;
    if (x->caller != y->caller) return x->caller < y->caller ? -1 : 1;
    return 0;
}

static void write_csv_locked(void)
{
    g_autofree char *tmp = g_strdup_printf("%s.tmp%d", out_path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "exitcount: cannot write %s: %s\n", tmp, strerror(errno));
        return;
    }
    fprintf(f, "phase,pc,kind,detail,port_or_address,size,caller_site_pc,device,count,starts\n");
    for (int p = 0; p < n_phases; p++) {
        fprintf(f, "%s,,insns,,,,,,%" PRIu64 ",%" PRIu64 "\n", phase_names[p], phase_insns[p],
                phase_tbs[p]);
    }
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, counts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_ptr_array_add(keys, k);
    }
    g_ptr_array_sort(keys, row_cmp);
    for (guint i = 0; i < keys->len; i++) {
        CKey *ck = g_ptr_array_index(keys, i);
        CVal *cv = g_hash_table_lookup(counts, ck);
        fprintf(f, "%s,", phase_names[ck->phase]);
        put_hex(f, ck->pc);
        fprintf(f, ",%s,%s,", kind_names[ck->kind], detail_names[ck->detail]);
        put_hex(f, ck->addr);
        fprintf(f, ",%d,", ck->size);
        put_hex(f, ck->caller);
        fputc(',', f);
        put_name(f, cv->device);
        fprintf(f, ",%" PRIu64 ",%" PRIu64 "\n", cv->count, cv->starts);
    }
    g_ptr_array_free(keys, TRUE);
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "exitcount: cannot write %s: %s\n", out_path, strerror(errno));
        unlink(tmp);
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    g_mutex_lock(&lock);
    poll_serial_locked();
    close_phase_locked();
    write_csv_locked();
    fprintf(stderr, "exitcount: shadow stack: %" PRIu64 " calls, %" PRIu64 " returns (%" PRIu64
            " matched), %" PRIu64 " dead frames dropped, %u stacks\n", n_calls, n_rets,
            n_rets_matched, n_dead_frames, all_stacks->len);
#ifdef EXITCOUNT_SELFCHECK
    fprintf(stderr, "exitcount: selfcheck: %" PRIu64 " RAM-cache hits, %" PRIu64 " wrong; %"
            PRIu64 " cached stack lookups, %" PRIu64 " wrong\n", check_ram_hits,
            check_ram_wrong, check_stack_hits, check_stack_wrong);
#endif
    g_mutex_unlock(&lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    if (!info->system_emulation || strcmp(info->target_name, "x86_64") != 0) {
        fprintf(stderr, "exitcount: needs qemu-system-x86_64 (got %s%s)\n", info->target_name,
                info->system_emulation ? "" : " user mode");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        char *opt = argv[i];
        g_auto(GStrv) kv = g_strsplit(opt, "=", 2);
        if (!kv[0] || !kv[1]) {
            fprintf(stderr, "exitcount: bad argument %s (want key=value)\n", opt);
            return -1;
        }
        if (strcmp(kv[0], "out") == 0) {
            out_path = g_strdup(kv[1]);
        } else if (strcmp(kv[0], "serial") == 0) {
            serial_path = g_strdup(kv[1]);
        } else if (strcmp(kv[0], "seq") == 0) {
            if (!qemu_plugin_bool_parse(kv[0], kv[1], &seq_on)) {
                fprintf(stderr, "exitcount: bad boolean %s\n", opt);
                return -1;
            }
        } else {
            fprintf(stderr, "exitcount: unknown argument %s\n", opt);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "exitcount: argument out=PATH is required\n");
        return -1;
    }
    n_vcpus = MAX(info->system.max_vcpus, 1);
    vcpus = g_new0(VCpu, n_vcpus);
    multi_vcpu = n_vcpus > 1;
    for (int i = 0; i < n_vcpus; i++) {
        vcpus[i].ram_gen = 1;   /* the zeroed cache entries have gen 0: all invalid */
    }
    counts = g_hash_table_new(ckey_hash, ckey_equal);
    insn_infos = g_hash_table_new(info_hash, info_equal);
    stacks = g_hash_table_new(g_direct_hash, g_direct_equal);
    all_stacks = g_ptr_array_new();
    phase_index("boot");
    cur_phase = 0;

    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_vcpu_idle_cb(id, cb_vcpu_idle_resume);
    qemu_plugin_register_vcpu_resume_cb(id, cb_vcpu_idle_resume);
    qemu_plugin_register_flush_cb(id, cb_tb_flush);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
#endif
