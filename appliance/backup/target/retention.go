package target

import (
	"sort"
	"time"
)

// Retention says which snapshots of a target to keep. Each rule keeps the
// newest snapshot of a period, counting only periods that have one, so that
// a pause in backups never makes the last good snapshots expire:
//
//   - KeepLast n: the n newest snapshots;
//   - KeepDaily n: the newest snapshot of each of the n most recent days
//     (UTC) that have a snapshot;
//   - KeepMonthly n: likewise per month (UTC).
//
// A snapshot is kept when any rule keeps it; the newest is always kept. All
// three zero keeps everything. Negative counts are taken as zero.
type Retention struct {
	KeepLast, KeepDaily, KeepMonthly int
}

// Keep splits the snapshots, id → time taken, into those to keep and those
// to drop, each oldest first (by time, then id). now is part of the
// contract for rules relative to the present; the rules above count
// periods that have snapshots and do not depend on it.
func (r Retention) Keep(times map[string]time.Time, now time.Time) (keep, drop []string) {
	type snap struct {
		id string
		t  time.Time
	}
	all := make([]snap, 0, len(times))
	for id, t := range times {
		all = append(all, snap{id, t.UTC()})
	}
	// Newest first.
	sort.Slice(all, func(i, j int) bool {
		if !all[i].t.Equal(all[j].t) {
			return all[i].t.After(all[j].t)
		}
		return all[i].id > all[j].id
	})
	kept := make([]bool, len(all))
	everything := r.KeepLast <= 0 && r.KeepDaily <= 0 && r.KeepMonthly <= 0
	for i := range all {
		if everything || i == 0 || i < r.KeepLast {
			kept[i] = true
		}
	}
	// perPeriod keeps the first (newest) snapshot of each of the n newest
	// periods, period(t) naming the period of t.
	perPeriod := func(n int, period func(time.Time) string) {
		seen := 0
		last := ""
		for i, s := range all {
			if seen >= n {
				return
			}
			if p := period(s.t); p != last {
				last = p
				seen++
				kept[i] = true
			}
		}
	}
	perPeriod(r.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") })
	perPeriod(r.KeepMonthly, func(t time.Time) string { return t.Format("2006-01") })
	for i := len(all) - 1; i >= 0; i-- {
		if kept[i] {
			keep = append(keep, all[i].id)
		} else {
			drop = append(drop, all[i].id)
		}
	}
	return keep, drop
}
