package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"
)

// pendingProfile is an in-process rerun of a scenario that missed its
// target, profiled after all measurements so profiling cannot slow them.
type pendingProfile struct {
	name string
	run  func(ctx context.Context) error
	// databaseBound keeps only the CPU total against the wall time, for
	// reruns whose time is spent waiting for PostgreSQL.
	databaseBound bool
}

func (b *bench) profileLater(name string, run func(ctx context.Context) error) {
	b.profiles = append(b.profiles, pendingProfile{name: name, run: run})
}

// runProfiles reruns each pending scenario under the CPU profiler and
// between two heap profiles, and adds `go tool pprof -top` summaries of
// both to the report.
func (b *bench) runProfiles(ctx context.Context) {
	for i, p := range b.profiles {
		logf("profiling %s", p.name)
		base := filepath.Join(b.env.dir, fmt.Sprintf("profile%d", i))
		body, err := profile(ctx, base, p.run, p.databaseBound)
		if err != nil {
			b.note("Profiling %s failed: %v", p.name, err)
			continue
		}
		b.section("Profile: "+p.name, body)
	}
}

func profile(ctx context.Context, base string, run func(ctx context.Context) error, databaseBound bool) (string, error) {
	cpuPath, allocBefore, allocAfter := base+".cpu.pprof", base+".allocs0.pprof", base+".allocs1.pprof"
	// Sample an allocation every 16 KiB instead of every 512 KiB, so short
	// reruns show more than a few samples.
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 16 * 1024
	if err := writeHeapProfile(allocBefore); err != nil {
		return "", err
	}
	cpu, err := os.Create(cpuPath)
	if err != nil {
		return "", err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return "", err
	}
	started := time.Now()
	runErr := run(ctx)
	wall := time.Since(started)
	pprof.StopCPUProfile()
	cpu.Close()
	if runErr != nil {
		return "", runErr
	}
	if err := writeHeapProfile(allocAfter); err != nil {
		return "", err
	}

	// The profiler's own work, such as compressing the profile, is no part
	// of the scenario.
	ignore := "-ignore=runtime/pprof|compress/"
	cpuTop, err := pprofTop("-top", "-nodecount=20", ignore, cpuPath)
	if err != nil {
		return "", err
	}
	if databaseBound {
		total, _, _ := strings.Cut(cpuTop, "\n")
		return fmt.Sprintf("The rerun took %s of wall time; `go tool pprof -top` of this process: %s.\n"+
			"The time is spent in PostgreSQL, so the query plan above shows where it goes.", wall.Round(time.Millisecond), strings.TrimSpace(total)), nil
	}
	allocTop, err := pprofTop("-top", "-nodecount=15", ignore, "-sample_index=alloc_space", "-base", allocBefore, allocAfter)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("The rerun took %s of wall time.\n\n", wall.Round(time.Millisecond)) +
		"CPU, `go tool pprof -top -nodecount=20`:\n\n```\n" + cpuTop + "```\n\n" +
		"Allocations during the rerun, `go tool pprof -top -nodecount=15 -sample_index=alloc_space -base`:\n\n```\n" + allocTop + "```", nil
}

func writeHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}

// pprofTop runs go tool pprof and drops its header lines up to the table.
func pprofTop(args ...string) (string, error) {
	out, err := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w: %s", strings.Join(args, " "), err, out)
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing nodes") {
			return strings.Join(lines[i:], "\n"), nil
		}
	}
	return string(out), nil
}
