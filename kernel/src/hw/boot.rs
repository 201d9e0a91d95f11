//! From GRUB to Rust: the multiboot2 header, the 32-bit entry GRUB jumps to, and the switch to
//! long mode.
//!
//! GRUB enters `_start` in 32-bit protected mode with paging off, EAX = 0x36D76289 and EBX =
//! the physical address of the multiboot2 information (Multiboot2 1.6, 3.3 "I386 machine
//! state"). We identity-map the first 4 GiB with 2 MiB pages, enable PAE and IA32_EFER.LME,
//! turn on paging, and far-return into 64-bit code, which calls `kernel_main(magic, info)`.
//! See: Intel SDM 325462-083US, vol. 3A, 10.8.5 "Initializing IA-32e Mode".

core::arch::global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xE85250D6                        /* magic */
    .long 0                                 /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header       /* header length */
    .long 0x100000000 - (0xE85250D6 + (mb2_header_end - mb2_header))
    .short 0                                /* end tag */
    .short 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    mov esp, offset boot_stack_top
    mov [boot_magic], eax
    mov [boot_info], ebx

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages. */
    mov eax, offset boot_pdpt
    or eax, 3
    mov [boot_pml4], eax
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jne 2b
    xor ecx, ecx
3:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83                            /* present, writable, 2 MiB page */
    mov [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jne 3b

    mov eax, cr4
    or eax, 1 << 5                          /* CR4.PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080                     /* IA32_EFER */
    rdmsr
    or eax, 1 << 8                          /* LME */
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1       /* PG | WP | PE */
    mov cr0, eax
    lgdt [boot_gdt_pointer]
    mov eax, offset long_mode_entry         /* (a `push imm` would assemble as 16-bit) */
    push 0x08
    push eax
    retf

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, [boot_magic]
    mov esi, [boot_info]
    call kernel_main
4:
    cli
    hlt
    jmp 4b

    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF                /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF                /* 0x10: data */
boot_gdt_end:
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip 0x40000
boot_stack_top:
boot_magic:
    .skip 4
boot_info:
    .skip 4
"#
);
