// A per-thread private array indexed by data, too large for registers, so the compiler keeps it
// in local memory. Each thread builds a 64-bin histogram of a walk that starts at in[i]:
// steps = 64 - (in[i] % 8) values (in[i] + j * (in[i] % 5 + 1)) % 64, then writes
// out[i] = counts[in[i] % 64] * 1000 + counts[(in[i] * 7) % 64].
// Parameters: in 0, out 8 (pointers), n 16 (u32); 20 bytes.
#define BINS 64

extern "C" __global__ void private_array(const unsigned int *in, unsigned int *out, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) {
    return;
  }
  unsigned int counts[BINS];
  for (unsigned int k = 0; k < BINS; k++) {
    counts[k] = 0;
  }
  unsigned int value = in[i];
  unsigned int steps = BINS - (value % 8);
  unsigned int stride = value % 5 + 1;
  for (unsigned int j = 0; j < steps; j++) {
    counts[(value + j * stride) % BINS] += 1;
  }
  out[i] = counts[value % BINS] * 1000 + counts[(value * 7) % BINS];
}
