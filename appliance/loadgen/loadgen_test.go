package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	for _, c := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2), 50, 1 * time.Millisecond},
		{ms(1, 2), 51, 2 * time.Millisecond},
		{ms(15, 20, 35, 40, 50), 30, 20 * time.Millisecond}, // the textbook example
		{ms(15, 20, 35, 40, 50), 40, 20 * time.Millisecond},
		{ms(15, 20, 35, 40, 50), 50, 35 * time.Millisecond},
		{ms(15, 20, 35, 40, 50), 100, 50 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 90, 90 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond}, // exactly, not 100 from a float rounding up
		{hundred, 99.5, 100 * time.Millisecond},
		{hundred, 0, 1 * time.Millisecond},
	} {
		if got := Percentile(c.samples, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.samples, c.p, got, c.want)
		}
	}
}

func TestRecorderStatsAreExactBelowTheReservoir(t *testing.T) {
	r := NewRecorder()
	perm := rand.Perm(1000)
	for _, v := range perm {
		r.Record(time.Duration(v+1) * time.Microsecond) // 1..1000 µs in random order
	}
	r.Record(-time.Second) // a clock step: counted as 0
	st := r.Stats()
	if st.Count != 1001 || st.Max != 1000*time.Microsecond {
		t.Fatalf("count %d max %v", st.Count, st.Max)
	}
	// 1001 samples: 0 and 1..1000 µs.
	if st.P50 != 500*time.Microsecond || st.P90 != 900*time.Microsecond || st.P99 != 990*time.Microsecond {
		t.Errorf("p50 %v p90 %v p99 %v", st.P50, st.P90, st.P99)
	}
	if want := time.Duration(1000*1001/2) * time.Microsecond / 1001; st.Mean != want {
		t.Errorf("mean %v, want %v", st.Mean, want)
	}
}

func TestRecorderReservoirCapsMemoryAndStaysRepresentative(t *testing.T) {
	r := newRecorder(1000)
	const n = 100_000
	for i := range n {
		r.Record(time.Duration(i) * time.Microsecond) // uniform over 0..100 ms
	}
	if len(r.samples) != 1000 {
		t.Fatalf("%d samples kept, want 1000", len(r.samples))
	}
	st := r.Stats()
	if st.Count != n || st.Max != (n-1)*time.Microsecond {
		t.Fatalf("count %d max %v: both must stay exact", st.Count, st.Max)
	}
	// A uniform sample of 1000: the median within a few percent of 50 ms.
	if st.P50 < 45*time.Millisecond || st.P50 > 55*time.Millisecond {
		t.Errorf("p50 %v of a uniform 0..100 ms", st.P50)
	}
	if st.P90 < 87*time.Millisecond || st.P90 > 93*time.Millisecond {
		t.Errorf("p90 %v of a uniform 0..100 ms", st.P90)
	}
}

func TestRecorderIsSafeForConcurrentUse(t *testing.T) {
	r := newRecorder(100)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				r.Record(time.Duration(i))
				if i%100 == 0 {
					r.Stats()
				}
			}
		})
	}
	wg.Wait()
	if r.Count() != 8000 {
		t.Fatalf("count %d", r.Count())
	}
}

func TestSizeMixParsesAndPicksByWeight(t *testing.T) {
	mix, err := ParseSizes("1k:80, 10k:15,100K:5")
	if err != nil {
		t.Fatal(err)
	}
	want := SizeMix{{1024, 80}, {10240, 15}, {102400, 5}}
	if !slices.Equal(mix, want) {
		t.Fatalf("got %v, want %v", mix, want)
	}
	if got := mix.Mean(); got != (1024*80+10240*15+102400*5)/100.0 {
		t.Errorf("mean %v", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[int]int{}
	for range 100_000 {
		counts[mix.Pick(rng)]++
	}
	for _, sw := range want {
		share := float64(counts[sw.Size]) / 1000 // percent
		if d := share - float64(sw.Weight); d < -1 || d > 1 {
			t.Errorf("size %d picked %.1f%% of the time, want %d%%", sw.Size, share, sw.Weight)
		}
	}
	single, err := ParseSizes("1024")
	if err != nil || !slices.Equal(single, SizeMix{{1024, 1}}) {
		t.Fatalf("single size: %v %v", single, err)
	}
	for s, want := range map[string]int{"1": 1, "512": 512, "2k": 2048, "2kb": 2048, "3KiB": 3072, "1m": 1 << 20, "1MB": 1 << 20} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1k", "k", "1x", "1k:0", "1k:-2", "1k:x", "1k,,2k", "1k:1:2", "100m", "1g"} {
		if mix, err := ParseSizes(bad); err == nil {
			t.Errorf("ParseSizes(%q) = %v, want an error", bad, mix)
		}
	}
}

func TestUserPatterns(t *testing.T) {
	us, err := ExpandUsers("bench%d@bench.test", 3, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if want := []User{{"bench1@bench.test", "pw"}, {"bench2@bench.test", "pw"}, {"bench3@bench.test", "pw"}}; !slices.Equal(us, want) {
		t.Fatalf("got %v", us)
	}
	one, err := ExpandUsers("alice@a.test", 1, "pw")
	if err != nil || !slices.Equal(one, []User{{"alice@a.test", "pw"}}) {
		t.Fatalf("single address: %v %v", one, err)
	}
	pct, err := ExpandUsers("100%%-u%d@a.test", 1, "pw")
	if err != nil || pct[0].Address != "100%-u1@a.test" {
		t.Fatalf("escaped percent: %v %v", pct, err)
	}
	for _, c := range []struct {
		pattern string
		n       int
	}{
		{"", 1},                   // no user
		{"alice@a.test", 2},       // two users need a %d
		{"u%s@a.test", 1},         // only %d
		{"u%d%d@a.test", 2},       // one %d
		{"u%d", 2},                // not an address
		{"bench%d@bench.test", 0}, // no users
	} {
		if us, err := ExpandUsers(c.pattern, c.n, "pw"); err == nil {
			t.Errorf("ExpandUsers(%q, %d) = %v, want an error", c.pattern, c.n, us)
		}
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "users")
	os.WriteFile(good, []byte("# bench users\nalice@a.test secret one\n\n  bob@a.test\tpw2\n"), 0o600)
	us, err := ReadUsersFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if want := []User{{"alice@a.test", "secret one"}, {"bob@a.test", "pw2"}}; !slices.Equal(us, want) {
		t.Fatalf("got %v", us)
	}
	for name, text := range map[string]string{"nopw": "alice@a.test\n", "noaddr": "alice secret\n", "empty": "# nothing\n"} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(text), 0o600)
		if us, err := ReadUsersFile(f); err == nil {
			t.Errorf("%s: %v, want an error", name, us)
		}
	}
	if _, err := ReadUsersFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file read without error")
	}
}

func TestScenariosAndTLSModes(t *testing.T) {
	all, err := ParseScenarios("all")
	if err != nil || !slices.Equal(all, Scenarios) {
		t.Fatalf("all: %v %v", all, err)
	}
	some, err := ParseScenarios("imap, SMTP,imap")
	if err != nil || !slices.Equal(some, []string{"imap", "smtp"}) {
		t.Fatalf("got %v %v", some, err)
	}
	for _, bad := range []string{"", "smtp,", "lmtp"} {
		if s, err := ParseScenarios(bad); err == nil {
			t.Errorf("ParseScenarios(%q) = %v, want an error", bad, s)
		}
	}
	for s, want := range map[string]TLSMode{"implicit": Implicit, "starttls": StartTLS, "none": NoTLS, "STARTTLS": StartTLS} {
		if got, err := ParseTLSMode(s); err != nil || got != want {
			t.Errorf("ParseTLSMode(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseTLSMode("ssl3"); err == nil {
		t.Error("ParseTLSMode accepted ssl3")
	}
}

func TestOptionsDefaultsAndRefusals(t *testing.T) {
	o := Options{Users: []User{{"a@a.test", "pw"}}}
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	if o.Host != "127.0.0.1" || o.SMTP.Port != 465 || o.IMAP.Port != 993 || o.POP3.Port != 995 || o.Concurrency != 8 ||
		o.Duration != 10*time.Second || o.MailboxMessages != 1000 || o.Server != "server" ||
		!slices.Equal(o.Scenarios, []string{"smtp"}) || o.TLSConfig.ServerName != "127.0.0.1" {
		t.Fatalf("defaults: %+v", o)
	}
	st := Options{Users: o.Users, SMTP: Endpoint{TLS: StartTLS}, IMAP: Endpoint{TLS: NoTLS}, POP3: Endpoint{TLS: StartTLS}}
	if err := st.Check(); err != nil || st.SMTP.Port != 587 || st.IMAP.Port != 143 || st.POP3.Port != 110 {
		t.Fatalf("ports for starttls/none: %v %+v", err, st)
	}
	for name, bad := range map[string]Options{
		"no users":       {},
		"both":           {Users: o.Users, Count: 5, Duration: time.Second},
		"pec no to":      {Scenarios: []string{"pec"}, PECFrom: "a@a.test", PECPassword: "x"},
		"pec no pw":      {Scenarios: []string{"pec"}, PECFrom: "a@a.test", PECTo: "b@a.test"},
		"no password":    {Users: []User{{"a@a.test", ""}}},
		"bad scenario":   {Users: o.Users, Scenarios: []string{"lmtp"}},
		"bad port":       {Users: o.Users, SMTP: Endpoint{Port: 70000}},
		"bad size":       {Users: o.Users, Sizes: SizeMix{{0, 1}}},
		"bad concurrent": {Users: o.Users, Concurrency: -1},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Bad options: Run says so before anything runs.
	if rs, err := Run(context.Background(), Options{}); err == nil || rs != nil {
		t.Errorf("Run with no users: %v %v", rs, err)
	}
}

func TestMessagesHaveTheSizeAndAUniqueSubject(t *testing.T) {
	r := newRunner(Options{})
	seen := map[string]bool{}
	for _, size := range []int{1, 300, 1024, 10 << 10, 100 << 10} {
		subject, msg := r.message("smtp", "a@a.test", "b@a.test", size)
		if seen[subject] || !strings.HasPrefix(subject, "loadgen smtp "+r.runID+"-") {
			t.Errorf("subject %q", subject)
		}
		seen[subject] = true
		if !bytes.Contains(msg, []byte("\r\nSubject: "+subject+"\r\n")) || !bytes.HasSuffix(msg, []byte("\r\n")) {
			t.Errorf("message of %d bytes: bad header or ending", size)
		}
		if size >= 1024 && (len(msg) > size || len(msg) < size-fillerLine) {
			t.Errorf("asked %d bytes, got %d", size, len(msg))
		}
		for _, line := range bytes.Split(msg, []byte("\r\n")) {
			if len(line) > 998 || bytes.HasPrefix(line, []byte(".")) {
				t.Fatalf("line %q", line)
			}
		}
	}
}

func TestTrackerMatchesInEitherOrder(t *testing.T) {
	tr := newTracker("accettazione", "consegna")
	t0 := time.Now()
	// The receipts before the 250 (the server told IDLE before the client
	// read its answer): latency 0, not negative.
	a := tr.expect("m1")
	tr.seen("m1", "accettazione", t0)
	tr.seen("m1", "consegna", t0.Add(time.Millisecond))
	select {
	case <-a.done:
		t.Fatal("complete before the 250")
	default:
	}
	tr.acked(a, t0.Add(2*time.Millisecond))
	<-a.done
	lat, failed := tr.result(a)
	if failed != "" || lat["accettazione"] != 0 || lat["consegna"] != 0 {
		t.Fatalf("early receipts: %v %q", lat, failed)
	}
	// The usual order.
	b := tr.expect("m2")
	tr.acked(b, t0)
	tr.seen("m2", "accettazione", t0.Add(3*time.Millisecond))
	tr.seen("m2", "accettazione", t0.Add(9*time.Millisecond)) // a duplicate keeps the first
	tr.seen("m2", "consegna", t0.Add(5*time.Millisecond))
	<-b.done
	if lat, _ := tr.result(b); lat["accettazione"] != 3*time.Millisecond || lat["consegna"] != 5*time.Millisecond {
		t.Fatalf("latencies %v", lat)
	}
	// An avviso ends it as a failure; unknown subjects are ignored.
	c := tr.expect("m3")
	tr.acked(c, t0)
	tr.seen("not ours", "consegna", t0)
	tr.failedWith("m3", "AVVISO DI MANCATA CONSEGNA")
	<-c.done
	if _, failed := tr.result(c); failed == "" {
		t.Fatal("no failure after an avviso")
	}
	tr.forget("m1")
	tr.forget("m2")
	tr.forget("m3")
	if len(tr.pending) != 0 {
		t.Fatalf("%d left", len(tr.pending))
	}
}

func TestReportFormats(t *testing.T) {
	rs := []Result{
		{Scenario: "smtp", Server: "sigillo", OpsPerS: 1234.5, P50Ms: 1.5, P90Ms: 2, P99Ms: 3, MaxMs: 4, Count: 100, DurationS: 0.081},
		{Scenario: "imap", Server: "postfix+dovecot", OpsPerS: 10, Count: 10, Ops: []OpResult{{Op: "select", Count: 5}, {Op: "search", Count: 5}}},
		{Scenario: "pop3", Server: "x", Error: "LOGIN refused", Errors: 1, Ops: []OpResult{{Op: "retr"}}},
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d JSON lines", len(lines))
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "server", "ops_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "count", "duration_s"} {
		if _, ok := first[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, lines[0])
		}
	}
	var tab bytes.Buffer
	if err := WriteTable(&tab, rs); err != nil {
		t.Fatal(err)
	}
	out := tab.String()
	for _, want := range []string{"ops/s", "p99 ms", "1234.5", "postfix+dovecot", "  select", "  search", "(LOGIN refused)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "retr ") && strings.Count(out, "retr") > 1 {
		t.Errorf("a scenario that did not start lists its empty rows:\n%s", out)
	}
	t.Logf("\n%s", out)
}

func TestAwaitCountsLateAndRefusedMessages(t *testing.T) {
	var log bytes.Buffer
	r := newRunner(Options{VisibleTimeout: 20 * time.Millisecond, Log: &log})
	s := r.newScenario("pec")
	tr := newTracker("accettazione", "consegna")
	now := time.Now()

	ok := tr.expect("ok")
	tr.acked(ok, now)
	tr.seen("ok", "accettazione", now.Add(time.Millisecond))
	tr.seen("ok", "consegna", now.Add(2*time.Millisecond))
	r.await(context.Background(), s, tr, ok)

	late := tr.expect("late")
	tr.acked(late, now)
	tr.seen("late", "accettazione", now)
	r.await(context.Background(), s, tr, late) // no consegna: 20 ms, then an error

	refused := tr.expect("refused")
	tr.acked(refused, now)
	tr.failedWith("refused", "AVVISO DI MANCATA CONSEGNA")
	r.await(context.Background(), s, tr, refused)

	if n := s.rec["consegna"].Count(); n != 1 {
		t.Errorf("%d consegne recorded, want 1", n)
	}
	if n := s.errs["consegna"].Load(); n != 2 {
		t.Errorf("%d consegna errors, want 2", n)
	}
	res := s.result()
	if res.Errors != 2 || res.Count != 1 || len(res.FirstErrors) != 2 ||
		!strings.Contains(res.FirstErrors[0], "consegna not seen 20ms after the 250") ||
		!strings.Contains(res.FirstErrors[1], "AVVISO DI MANCATA CONSEGNA") {
		t.Fatalf("result %+v", res)
	}
	if got := strings.Count(log.String(), "\n"); got != 2 {
		t.Errorf("%d error lines logged, want 2:\n%s", got, log.String())
	}
}
