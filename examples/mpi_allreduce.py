# An MPI job for `agentctl run --launcher mpi`: every rank contributes its rank, the sum comes back to all.
# Run: agentctl run --launcher mpi -- python3 examples/mpi_allreduce.py
from mpi4py import MPI

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank(), op=MPI.SUM)
expected = comm.Get_size() * (comm.Get_size() - 1) // 2
print(f"rank {comm.Get_rank()} of {comm.Get_size()} on {MPI.Get_processor_name()}: allreduce {total}", flush=True)
assert total == expected, f"allreduce gave {total}, expected {expected}"
