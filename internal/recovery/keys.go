package recovery

import "github.com/flashgate/flashgate/internal/rkeys"

// Key and field names of the settlement side. They are defined in internal/rkeys (the
// one place every Redis name lives); these aliases keep this package's callers short.

// Released is rkeys.Released: a campaign's set of claim ids whose value was given back.
func Released(campaign string) string { return rkeys.Released(campaign) }

// ServerRunID is rkeys.ServerRunID.
const ServerRunID = rkeys.ServerRunID

// Lock is rkeys.RecoveryLock: the recovery lock of a business line.
func Lock(businessLine string) string { return rkeys.RecoveryLock(businessLine) }

func usersRebuild(campaign string) string    { return rkeys.UsersRebuild(campaign) }
func releasedRebuild(campaign string) string { return rkeys.ReleasedRebuild(campaign) }

// Fields this package and release.lua add to rkeys' hashes (see rkeys).
const (
	FieldRunID      = rkeys.FieldRunID
	FieldRecovering = rkeys.FieldRecovering
	FieldReleased   = rkeys.FieldReleased
	FieldRecycled   = rkeys.FieldRecycled
)
