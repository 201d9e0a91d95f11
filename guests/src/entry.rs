//! The boot path: multiboot header, then 32-bit protected mode to 64-bit long mode.
//!
//! The loader enters `carousel_entry32` in 32-bit protected mode with paging off, CS/DS/ES/SS
//! flat, IF = 0, EAX = multiboot magic, EBX = information address, and a GDTR that points at
//! nothing useful. The entry code then, in order:
//!
//! 1. stores EAX and EBX in `.data` and zeroes `.bss` (the loader does too; this makes the page
//!    tables below independent of it);
//! 2. switches to the stack in `.bss`;
//! 3. builds an identity map of the first 4 GiB in `.bss` (one PML4 entry, four PDPT entries,
//!    4 × 512 2-MiB PD entries), with the device window 0xFE00_0000–0xFFFF_FFFF (local APIC,
//!    I/O APIC) uncached;
//! 4. sets CR4.PAE, loads CR3, writes IA32_EFER = LME (one `WRMSR`, no `RDMSR`), sets CR0.PG |
//!    CR0.WP;
//! 5. loads its own GDT (64-bit code at 0x08, flat data at 0x10) and far-returns into 64-bit code,
//!    which reloads the data segments and calls `carousel_start(magic, information)`.
//!
//! The steps follow Intel SDM Vol. 3A (order no. 325462) 10.8.5 "Initializing IA-32e Mode":
//! "Enable IA-32e mode by setting IA32_EFER.LME = 1" and "Enable paging by setting CR0.PG = 1.
//! This causes the processor to set the IA32_EFER.LMA bit to 1."

use core::arch::global_asm;

use crate::multiboot::{HEADER_CHECKSUM, HEADER_FLAGS, HEADER_MAGIC};

/// GDT selector of the 64-bit code segment.
pub(crate) const CODE_SELECTOR: u32 = 0x08;
/// GDT selector of the flat data segment.
const DATA_SELECTOR: u32 = 0x10;
/// GDT descriptor: 64-bit code (L = 1), present, ring 0, execute/read, accessed (so the
/// processor never writes the descriptor).
const CODE64_DESCRIPTOR: u64 = 0x00AF_9B00_0000_FFFF;
/// GDT descriptor: flat 4-GiB data, present, ring 0, read/write, accessed.
const DATA_DESCRIPTOR: u64 = 0x00CF_9300_0000_FFFF;

/// Page-table entry: present and writable.
const PAGE_PRESENT_WRITABLE: u32 = 0b11;
/// Page-directory entry: maps a 2-MiB page (PS).
const PAGE_SIZE_2MIB_FLAG: u32 = 1 << 7;
/// Size of the page a PD entry with PS maps.
const PAGE_SIZE_2MIB: u32 = 2 << 20;
/// Page-directory entry: page-level write-through (PWT).
const PAGE_WRITE_THROUGH: u32 = 1 << 3;
/// Page-directory entry: page-level cache disable (PCD).
const PAGE_CACHE_DISABLE: u32 = 1 << 4;
/// Entries in one page-table page.
const ENTRIES_PER_TABLE: u32 = 512;
/// Page directories in the identity map: one per GiB, four for the 32-bit physical space.
const PAGE_DIRECTORIES: u32 = 4;
/// First 2-MiB page of the device window (0xFE00_0000), as an index into the four contiguous
/// page directories.
const DEVICE_WINDOW_FIRST_PAGE: u32 = 0xFE00_0000 / PAGE_SIZE_2MIB;
/// 2-MiB pages in the device window 0xFE00_0000–0xFFFF_FFFF.
const DEVICE_WINDOW_PAGES: u32 = ENTRIES_PER_TABLE * PAGE_DIRECTORIES - DEVICE_WINDOW_FIRST_PAGE;

/// CR4.PAE: physical address extension (required for IA-32e paging).
const CR4_PAE: u32 = 1 << 5;
/// CR0.PE: protection enable (already set by the loader; kept).
const CR0_PE: u32 = 1 << 0;
/// CR0.WP: write protect in ring 0.
const CR0_WP: u32 = 1 << 16;
/// CR0.PG: paging.
const CR0_PG: u32 = 1 << 31;
/// MSR IA32_EFER.
const IA32_EFER: u32 = 0xC000_0080;
/// IA32_EFER.LME: IA-32e mode enable.
const EFER_LME: u32 = 1 << 8;

/// Size of the boot stack, on which the whole guest runs.
const STACK_SIZE: usize = 64 << 10;

global_asm!(
    // The multiboot header: first in the image (see link.ld).
    ".section .multiboot, \"a\"",
    ".balign 4",
    ".long {header_magic}",
    ".long {header_flags}",
    ".long {header_checksum}",
    //
    ".section .rodata.carousel_boot, \"a\"",
    ".balign 8",
    "carousel_gdt:",
    ".quad 0",
    ".quad {code64_descriptor}",
    ".quad {data_descriptor}",
    "carousel_gdt_end:",
    ".balign 4",
    "carousel_gdt_pointer:",
    ".word carousel_gdt_end - carousel_gdt - 1",
    ".long carousel_gdt",
    //
    ".section .data.carousel_boot, \"aw\"",
    ".balign 4",
    "carousel_boot_magic: .long 0",
    "carousel_boot_information: .long 0",
    //
    ".section .bss.carousel_boot, \"aw\", @nobits",
    ".balign 4096",
    "carousel_pml4: .skip 4096",
    "carousel_pdpt: .skip 4096",
    "carousel_pd: .skip 4096 * {page_directories}",
    ".balign 16",
    "carousel_stack: .skip {stack_size}",
    "carousel_stack_top:",
    //
    ".section .text.entry32, \"ax\"",
    ".code32",
    ".global carousel_entry32",
    "carousel_entry32:",
    "cli",
    "cld",
    "mov dword ptr [carousel_boot_magic], eax",
    "mov dword ptr [carousel_boot_information], ebx",
    // Zero .bss: page tables need their unused entries clear.
    "mov edi, offset __bss_start",
    "mov ecx, offset __bss_end",
    "sub ecx, edi",
    "xor eax, eax",
    "rep stosb",
    "mov esp, offset carousel_stack_top",
    // PML4[0] -> PDPT; PDPT[g] -> the g-th PD (g < 4); PD entry i (counting across the four
    // contiguous PDs) -> i * 2 MiB. Physical addresses stay below 4 GiB, so every entry's high
    // doubleword stays zero.
    "mov eax, offset carousel_pdpt",
    "or eax, {present_writable}",
    "mov dword ptr [carousel_pml4], eax",
    "mov edi, offset carousel_pdpt",
    "mov eax, offset carousel_pd",
    "or eax, {present_writable}",
    "mov ecx, {page_directories}",
    "2:",
    "mov dword ptr [edi], eax",
    "add eax, 4096",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",
    "mov edi, offset carousel_pd",
    "mov eax, {present_writable} | {page_size_flag}",
    "mov ecx, {entries} * {page_directories}",
    "2:",
    "mov dword ptr [edi], eax",
    "add eax, {page_size}",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",
    // The device window uncached: PCD | PWT with PAT = 0 selects PAT entry 3, which is UC at
    // power-up. (SDM Vol. 3A, 'Selecting a Memory Type from the PAT'; the guests never write
    // IA32_PAT.)
    "mov edi, offset carousel_pd + 8 * {device_first_page}",
    "mov ecx, {device_pages}",
    "2:",
    "or dword ptr [edi], {uncached}",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",
    // IA-32e paging: PAE, CR3, EFER.LME, then CR0.PG (which activates long mode).
    "mov eax, cr4",
    "or eax, {cr4_pae}",
    "mov cr4, eax",
    "mov eax, offset carousel_pml4",
    "mov cr3, eax",
    "mov ecx, {ia32_efer}",
    "mov eax, {efer_lme}",
    "xor edx, edx",
    "wrmsr",
    "mov eax, cr0",
    "or eax, {cr0_bits}",
    "mov cr0, eax",
    // Now in compatibility mode; our GDT, then a far return into 64-bit code.
    "lgdt [carousel_gdt_pointer]",
    // (Through EAX: LLVM would assemble `push imm` as a 16-bit push here.)
    "mov eax, {code_selector}",
    "push eax",
    "mov eax, offset carousel_entry64",
    "push eax",
    "retf",
    //
    ".code64",
    "carousel_entry64:",
    "mov ax, {data_selector}",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    "lea rsp, [rip + carousel_stack_top]",
    "mov edi, dword ptr [rip + carousel_boot_magic]",
    "mov esi, dword ptr [rip + carousel_boot_information]",
    "call {start}",
    "ud2",
    header_magic = const HEADER_MAGIC,
    header_flags = const HEADER_FLAGS,
    header_checksum = const HEADER_CHECKSUM,
    code64_descriptor = const CODE64_DESCRIPTOR,
    data_descriptor = const DATA_DESCRIPTOR,
    stack_size = const STACK_SIZE,
    present_writable = const PAGE_PRESENT_WRITABLE,
    page_size_flag = const PAGE_SIZE_2MIB_FLAG,
    page_size = const PAGE_SIZE_2MIB,
    entries = const ENTRIES_PER_TABLE,
    page_directories = const PAGE_DIRECTORIES,
    device_first_page = const DEVICE_WINDOW_FIRST_PAGE,
    device_pages = const DEVICE_WINDOW_PAGES,
    uncached = const PAGE_CACHE_DISABLE | PAGE_WRITE_THROUGH,
    cr4_pae = const CR4_PAE,
    ia32_efer = const IA32_EFER,
    efer_lme = const EFER_LME,
    cr0_bits = const CR0_PE | CR0_WP | CR0_PG,
    code_selector = const CODE_SELECTOR,
    data_selector = const DATA_SELECTOR,
    start = sym crate::carousel_start,
);
