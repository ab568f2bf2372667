// A per-work-item private array indexed by data, too large for registers, so the compiler keeps it
// in scratch (the private segment). Each work-item builds a 64-bin histogram of a walk that starts
// at in[i]: steps = 64 - (in[i] % 8) values (in[i] + j * (in[i] % 5 + 1)) % 64, then writes
// out[i] = counts[in[i] % 64] * 1000 + counts[(in[i] * 7) % 64].
#define BINS 64

__kernel void private_array(__global const uint *in, __global uint *out, uint n) {
  size_t i = get_global_id(0);
  if (i >= n) {
    return;
  }
  uint counts[BINS];
  for (uint k = 0; k < BINS; k++) {
    counts[k] = 0;
  }
  uint value = in[i];
  uint steps = BINS - (value % 8);
  uint stride = value % 5 + 1;
  for (uint j = 0; j < steps; j++) {
    counts[(value + j * stride) % BINS] += 1;
  }
  out[i] = counts[value % BINS] * 1000 + counts[(value * 7) % BINS];
}
