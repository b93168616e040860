// Package evict checks that Redis may not evict claim state (issue 14, "Redis memory
// under abuse"). Under any maxmemory-policy but noeviction, a Redis at its maxmemory
// deletes keys to make room: allkeys-* any key (stock, budgets, idempotency records,
// outbox), volatile-* keys with a TTL - every idempotency record has one, so a retry
// could be decided anew and take a second voucher. The gateway and the settler refuse
// to start on such a Redis unless told it is acceptable (-allow-eviction,
// FLASH_REDIS_ALLOW_EVICTION=true), and /readyz names it (RELIABILITY.md).
package evict

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Safe is the only policy that never evicts.
const Safe = "noeviction"

// Override names the flag and variable that accept another policy.
const Override = "-allow-eviction (FLASH_REDIS_ALLOW_EVICTION=true)"

// ErrEvicting is returned when the policy could evict claim state.
var ErrEvicting = errors.New("redis may evict claim state")

// Policy reads the server's maxmemory-policy from INFO memory (INFO is what every
// flashgate Redis user may run; CONFIG is not).
func Policy(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return "", fmt.Errorf("redis info memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok {
			return v, nil
		}
	}
	return "", errors.New("redis info memory: no maxmemory_policy")
}

// Check returns an error wrapping ErrEvicting, naming the policy and the override, unless
// the policy is noeviction.
func Check(ctx context.Context, rdb redis.UniversalClient) error {
	p, err := Policy(ctx, rdb)
	if err != nil {
		return err
	}
	if p != Safe {
		return fmt.Errorf("%w: maxmemory-policy is %s, want %s (CONFIG SET maxmemory-policy noeviction, "+
			"or accept the risk with %s)", ErrEvicting, p, Safe, Override)
	}
	return nil
}
