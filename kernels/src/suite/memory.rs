//! Memory bandwidth: read, write, copy and triad kernels over arrays many times the L2,
//! verified by checksum.

use super::*;

impl Bench<'_> {
    pub(super) fn memory(&mut self) {
        match self.memory_all() {
            Ok(()) => {}
            Err(why) => {
                let measured: Vec<MemOp> = self.memory.iter().map(|r| r.op).collect();
                for op in MemOp::ALL.into_iter().filter(|op| !measured.contains(op)) {
                    self.skip(format!("{} memory", op.as_str()), why.clone());
                }
            }
        }
    }

    fn memory_all(&mut self) -> Result<(), String> {
        let gpu = self.gpu;
        // Arrays: up to 1 GiB each (many times any L2), three of them at most an eighth of
        // the free memory, a multiple of 16 MiB.
        let (free, _) = gpu.ctx.mem_get_info().map_err(cuda("memory info"))?;
        let words = ((free as u64 / 24).min(1 << 30) / 4) & !((4 << 20) - 1);
        if words < 1 << 20 {
            return Err(format!("only {} MiB of GPU memory free", free >> 20));
        }
        let n16 = words / 4;
        let kernel = |entry: &str| -> Result<Kernel<'_>, String> {
            let f = gpu.function(crate::registry::ModuleId::Memory, entry)?;
            let grid = launch::memory_grid(gpu, &f, n16)?;
            Ok(Kernel { gpu, f, grid })
        };
        let k = MemKernels {
            read: kernel("mem_read")?,
            write: kernel("mem_write")?,
            copy: kernel("mem_copy")?,
            triad: kernel("mem_triad")?,
        };
        let mut sink = alloc::<u32>(gpu, (k.read.grid * shape::MEM_THREADS / 32) as usize)?;

        // Verification on ~16 MiB arrays whose length is not a multiple of the grid's stride,
        // with the timing grid.
        self.verify_memory(&k, 4 * 1_048_573, &mut sink)?;

        let mut a = alloc::<u32>(gpu, words as usize)?;
        let mut b = alloc::<u32>(gpu, words as usize)?;
        let array_bytes = words * 4;
        for op in [MemOp::Copy, MemOp::Read, MemOp::Write, MemOp::Triad] {
            if !self.plan.fits() {
                self.skip(format!("{} memory", op.as_str()), "time budget spent");
                continue;
            }
            let measured = match op {
                MemOp::Read => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_read(&k.read, &a, &mut sink))
                }),
                MemOp::Write => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_write(&k.write, &mut a, 7))
                }),
                MemOp::Copy => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_copy(&k.copy, &mut b, &a))
                }),
                MemOp::Triad => {
                    let mut c = alloc::<u32>(gpu, words as usize)?;
                    self.measure(1, 1000, |n| {
                        (0..n).try_for_each(|_| launch::mem_triad(&k.triad, &mut c, &a, &b, 2.0))
                    })
                }
            };
            match measured {
                Ok((median, launches)) => self.memory.push(MemoryResult {
                    op,
                    bytes_per_s: flops::rate(
                        flops::memory_bytes(op.traffic(), array_bytes),
                        median / launches as f64,
                    ),
                }),
                Err(why) => self.skip(format!("{} memory", op.as_str()), why),
            }
        }
        Ok(())
    }

    /// Checks read, write, copy and triad on arrays of `words` words by checksum.
    fn verify_memory(
        &self,
        k: &MemKernels,
        words: usize,
        sink: &mut CudaSlice<u32>,
    ) -> Result<(), String> {
        let gpu = self.gpu;
        let (mut x, mut y, mut z) = (
            alloc::<u32>(gpu, words)?,
            alloc::<u32>(gpu, words)?,
            alloc::<u32>(gpu, words)?,
        );
        let n = words as u64;
        let checksum = |sink: &mut CudaSlice<u32>, src: &CudaSlice<u32>| -> Result<u32, String> {
            launch::mem_read(&k.read, src, sink)?;
            let parts = gpu.stream.clone_dtoh(&*sink).map_err(cuda("copy"))?;
            Ok(parts.iter().fold(0u32, |acc, &p| acc.wrapping_add(p)))
        };
        let fail = |what: &str, got: u32, want: u32| {
            Err(format!(
                "verification failed: {what} checksum {got:#010x}, want {want:#010x}"
            ))
        };
        // fill + read: random words.
        let table: Vec<u32> = (0..16u32)
            .map(|i| i.wrapping_mul(0x9E37_79B1) ^ 0xA5A5_0F0F)
            .collect();
        launch::fill(gpu, &mut x, 11, &upload(gpu, &table)?)?;
        let want = check::word_checksum(n, |i| table[check::fill_index(i, 11)]);
        let got = checksum(sink, &x)?;
        if got != want {
            return fail("mem_read of filled words", got, want);
        }
        // copy x -> y.
        launch::mem_copy(&k.copy, &mut y, &x)?;
        let got = checksum(sink, &y)?;
        if got != want {
            return fail("mem_copy", got, want);
        }
        // write.
        launch::mem_write(&k.write, &mut y, 0xDEAD_BEEF)?;
        let got = checksum(sink, &y)?;
        let want = check::word_checksum(n, |_| 0xDEAD_BEEF);
        if got != want {
            return fail("mem_write", got, want);
        }
        // triad: z = x + 2 y on grid floats (exact).
        let grid_bits: Vec<u32> = Format::F32.grid().iter().map(|v| v.to_bits()).collect();
        let grid_d = upload(gpu, &grid_bits)?;
        launch::fill(gpu, &mut x, 21, &grid_d)?;
        launch::fill(gpu, &mut y, 22, &grid_d)?;
        launch::mem_triad(&k.triad, &mut z, &x, &y, 2.0)?;
        let got = checksum(sink, &z)?;
        let g = Format::F32.grid();
        let want = check::word_checksum(n, |i| {
            (g[check::fill_index(i, 21)] + 2.0 * g[check::fill_index(i, 22)]).to_bits()
        });
        if got != want {
            return fail("mem_triad", got, want);
        }
        Ok(())
    }
}

/// The four memory kernels with their grids.
struct MemKernels<'g> {
    read: Kernel<'g>,
    write: Kernel<'g>,
    copy: Kernel<'g>,
    triad: Kernel<'g>,
}
