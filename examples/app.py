"""A small program for the examples: it imports numpy and scipy (the
start-up fmcache speeds up) and computes; under a launcher (srun, mpirun)
every rank does it, the ranks reduce over MPI (mpi4py) and rank 0 prints
one line per rank. Run alone, it prints its one line."""
import os

import numpy.fft
import scipy.interpolate

x = numpy.arange(8.0)
value = float(scipy.interpolate.make_interp_spline(x, x * x, k=1)(2.5))
value += float(numpy.fft.fft([1.0, 2.0, 3.0]).real.sum())

# Started by srun or mpirun as one of several tasks.
LAUNCHED = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS")
if any(k in os.environ for k in LAUNCHED):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(comm.rank)
    line = f"rank {comm.rank} of {comm.size}: value {value}, sum of ranks {total}"
    # One writer: launchers may split lines that ranks write at once.
    lines = comm.gather(line, root=0)
    if comm.rank == 0:
        print("\n".join(lines), flush=True)
else:
    print(f"rank 0 of 1: value {value}", flush=True)
