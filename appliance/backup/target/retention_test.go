package target

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// Which snapshots an operator's retention settings keep, on fixed dates.
func TestRetentionKeep(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	// Snapshots taken every 6 hours from 1 to 3 December, then a pause
	// (the target was down), then 10 December, plus one in November and
	// two in October.
	dates := []string{
		"2026-10-05 03:00", "2026-10-20 03:00",
		"2026-11-30 23:59",
		"2026-12-01 00:00", "2026-12-01 06:00", "2026-12-01 12:00", "2026-12-01 18:00",
		"2026-12-02 00:00", "2026-12-02 06:00", "2026-12-02 12:00", "2026-12-02 18:00",
		"2026-12-03 00:00", "2026-12-03 06:00",
		"2026-12-10 09:00",
	}
	times := map[string]time.Time{}
	id := map[string]string{} // date → id
	for i, d := range dates {
		k := fmt.Sprintf("snap%02d", i)
		times[k] = at(d)
		id[d] = k
	}
	ids := func(ds ...string) []string {
		var out []string
		for _, d := range ds {
			out = append(out, id[d])
		}
		return out
	}
	now := at("2026-12-31 00:00") // a month later: nothing expires by age
	cases := []struct {
		name string
		r    Retention
		keep []string
	}{
		{"all zero keeps everything", Retention{}, ids(dates...)},
		{"negative is zero", Retention{KeepLast: -3}, ids(dates...)},
		{"keep last 3", Retention{KeepLast: 3}, ids("2026-12-03 00:00", "2026-12-03 06:00", "2026-12-10 09:00")},
		{"keep last 1", Retention{KeepLast: 1}, ids("2026-12-10 09:00")},
		{"keep last more than there are", Retention{KeepLast: 100}, ids(dates...)},
		// Days with a snapshot, newest first: 12-10, 12-03, 12-02: the pause
		// from 4 to 9 December does not count.
		{"keep daily 3", Retention{KeepDaily: 3}, ids("2026-12-02 18:00", "2026-12-03 06:00", "2026-12-10 09:00")},
		{"keep monthly 2", Retention{KeepMonthly: 2}, ids("2026-11-30 23:59", "2026-12-10 09:00")},
		{"keep monthly 12", Retention{KeepMonthly: 12}, ids("2026-10-20 03:00", "2026-11-30 23:59", "2026-12-10 09:00")},
		{"union: last 3, daily 2, monthly 3", Retention{KeepLast: 3, KeepDaily: 2, KeepMonthly: 3},
			ids("2026-10-20 03:00", "2026-11-30 23:59", "2026-12-03 00:00", "2026-12-03 06:00", "2026-12-10 09:00")},
		{"daily only: the newest is kept", Retention{KeepDaily: 1}, ids("2026-12-10 09:00")},
	}
	for _, c := range cases {
		keep, drop := c.r.Keep(times, now)
		if !reflect.DeepEqual(keep, c.keep) {
			t.Errorf("%s: keep %v, want %v", c.name, keep, c.keep)
		}
		if len(keep)+len(drop) != len(times) {
			t.Errorf("%s: %d kept + %d dropped of %d", c.name, len(keep), len(drop), len(times))
		}
		seen := map[string]bool{}
		for _, k := range append(append([]string{}, keep...), drop...) {
			if seen[k] {
				t.Errorf("%s: %s both kept and dropped", c.name, k)
			}
			seen[k] = true
		}
		for i := 1; i < len(drop); i++ {
			if times[drop[i]].Before(times[drop[i-1]]) {
				t.Errorf("%s: drop not oldest first: %v", c.name, drop)
			}
		}
	}
}

// Days and months are UTC: a snapshot at 23:30 in Rome on 1 December is of
// 1 December UTC (22:30), one at 00:30 Rome on 2 December is still of
// 1 December UTC (23:30).
func TestRetentionDaysAreUTC(t *testing.T) {
	rome := time.FixedZone("CET", 3600)
	times := map[string]time.Time{
		"a": time.Date(2026, 12, 1, 23, 30, 0, 0, rome),
		"b": time.Date(2026, 12, 2, 0, 30, 0, 0, rome),
		"c": time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC),
	}
	keep, drop := Retention{KeepDaily: 2}.Keep(times, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	if !reflect.DeepEqual(keep, []string{"b", "c"}) || !reflect.DeepEqual(drop, []string{"a"}) {
		t.Fatalf("keep %v drop %v, want keep [b c] drop [a]", keep, drop)
	}
}

// Snapshots taken in the same second sort by id, so Keep is deterministic;
// an empty target keeps and drops nothing.
func TestRetentionTiesAndEmpty(t *testing.T) {
	same := time.Date(2026, 12, 2, 21, 23, 0, 0, time.UTC)
	times := map[string]time.Time{"20261202T212300Z-2": same, "20261202T212300Z-1": same, "20261202T212300Z-3": same}
	for range 10 { // map order varies
		keep, drop := Retention{KeepLast: 1}.Keep(times, same)
		if !reflect.DeepEqual(keep, []string{"20261202T212300Z-3"}) || !reflect.DeepEqual(drop, []string{"20261202T212300Z-1", "20261202T212300Z-2"}) {
			t.Fatalf("keep %v drop %v", keep, drop)
		}
	}
	if keep, drop := (Retention{KeepLast: 3}).Keep(nil, same); keep != nil || drop != nil {
		t.Fatalf("empty: keep %v drop %v", keep, drop)
	}
}
