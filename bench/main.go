// Command bench is flashgate's load harness for SREs: it creates a campaign through the
// admin API, offers open-loop load at a fixed rate or ramps it to find the highest rate
// that holds a latency objective, proves guarantees 1-3 of the contract against Redis
// and Postgres afterwards, and measures the machine's ceilings. Everything it does lives
// in the packages under bench/; this file only parses flags and maps outcomes to exit
// codes an SRE can gate a pipeline on:
//
//	0  held (the objective held, the guarantees held)
//	1  the objective broke, or the command could not do its job (a store unreachable)
//	2  a guarantee was violated
//	3  usage: a bad flag or argument
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

const (
	exitHeld     = 0
	exitBroke    = 1
	exitViolated = 2
	exitUsage    = 3
)

const usage = `bench: flashgate's load harness.

usage: bench <command> [flags]     (bench <command> --help for its flags)

commands:
  setup    create a business line and a campaign through the admin API
  run      offer a fixed rate for a duration (open loop), report latency and outcomes
  ramp     raise the rate in steps until the objective breaks; report the highest rate that held
  verify   after settlement, check guarantees 1-3 against Redis, Postgres and bench's record
  limits   measure this machine's ceilings (bare HTTP, claim script, broker, Postgres)
  odds     a lottery's fairness check: chi-square of its draws in Postgres against its odds, and its figures
  fulfil   a fulfilment server for a lottery's delivered prizes: answers 200, counts Idempotency-Keys
  report   re-render report.html from a run's result.json
  life     after a sale: redeem against orders, refund, transfer, print the review

exit codes: 0 held, 1 objective broke (or could not run), 2 guarantee violated, 3 usage
`

type command struct {
	name string
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"setup", cmdSetup},
	{"run", cmdRun},
	{"ramp", cmdRamp},
	{"verify", cmdVerify},
	{"limits", cmdLimits},
	{"odds", cmdOdds},
	{"fulfil", cmdFulfil},
	{"report", cmdReport},
	{"life", cmdLife},
}

func main() {
	generatorProcs()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitHeld
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "bench: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// newFlags returns a flag set for a command. --help prints its usage to stdout (exit
// 0); a parse error prints the error and a hint to stderr (exit 3).
func newFlags(name, synopsis string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: bench %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; it returns (code, true) when the command should stop with code.
func parse(fs *flag.FlagSet, parseFn func([]string) error, args []string, stdout io.Writer) (int, bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitHeld, true
		}
	}
	quietUsage := fs.Usage
	fs.Usage = func() {} // an error prints itself and a hint, not every flag
	err := parseFn(args)
	fs.Usage = quietUsage
	if err != nil {
		// The flag package has printed its own errors; an environment error has not.
		if strings.HasPrefix(err.Error(), "bad environment") {
			fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		}
		fmt.Fprintf(fs.Output(), "run '%s --help' for the flags\n", fs.Name())
		return exitUsage, true
	}
	return 0, false
}

// usageErr reports a bad flag value and returns the usage exit code.
func usageErr(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bench %s: %v\n", cmd, err)
	return exitUsage
}

// failed reports an error that kept the command from doing its job.
func failed(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bench %s: %v\n", cmd, err)
	return exitBroke
}

// generatorProcs gives bench more Go processors than the machine has cores, unless
// GOMAXPROCS is set. The generator's schedule is kept by one goroutine that sleeps in
// nanosleep(2) until each request is due; with one P per core it then waits for a P
// behind hundreds of connection goroutines, and its lag (p99 over 1 ms at 4,000/s on a
// 2-core machine) made every run "fall behind". With spare Ps the kernel runs it as
// soon as it wakes: measured on the same machine, the bare-handler ceiling that bench
// can certify went from 5,600/s to 15,000/s (README, BENCHMARKS.md).
func generatorProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(8, 4*runtime.NumCPU()))
	}
}
