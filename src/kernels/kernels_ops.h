/* Entries of smelt_kernels beyond the basic casts (included inside the struct). */
