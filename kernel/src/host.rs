//! What the run loop needs from the machine beside the vCPUs and the frames: the clock, the
//! serial lines and the host CPU's CPUID. The hypervisor binary implements [`Host`] over the real
//! TSC and UARTs; the host tests over a fake clock and vectors (`testing::FakeHost`).

use crate::disk::Drive;
use crate::export::Exporter;

/// The machine, as the run loop sees it.
pub trait Host {
    /// The TSC now.
    fn now(&mut self) -> u64;
    /// The record stream (COM2 or the debug port).
    fn exporter(&mut self) -> &mut Exporter;
    /// True when VM `vm` has room on COM1 for one more console line.
    fn console_has_room(&mut self, vm: u16) -> bool;
    /// Queues one console line of VM `vm` (the caller checked the room).
    fn console_line(&mut self, vm: u16, line: &[u8]);
    /// Gives the serial lines what they take now, without waiting.
    fn feed_serial(&mut self);
    /// When a serial line next wants bytes (its FIFO will have drained), if bytes wait: the
    /// run loop takes an exit then, charged to no slice, so that the lines keep up while the
    /// guests run without exiting.
    fn next_feed(&mut self) -> Option<u64>;
    /// Waits until everything queued for the serial lines has left (the end of a run only).
    fn flush_serial(&mut self);
    /// A byte of console input from the host tool, if one waits.
    fn poll_input(&mut self) -> Option<u8>;
    /// Nothing is runnable until `deadline` (or until input or a host interrupt): the real
    /// machine spins once and returns, a fake clock moves on.
    fn wait(&mut self, deadline: u64);
    /// CPUID of the host CPU.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// The shared drive holding the VMs' disks, if the machine has one.
    fn drive(&mut self) -> Option<&mut dyn Drive>;
}
