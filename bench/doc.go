// Package bench holds helix's benchmarks (in its _test.go files, one per area: the
// allocator, the MySQL store, the simulator) and bench/benchtable, which turns their
// output into the markdown table that `make bench` (bench/run.sh) prints.
package bench
