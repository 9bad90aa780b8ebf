# Sigillo: `make run` starts the embedded default, `make test` runs every test.
GO ?= go
BIN := bin/sigillo
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X sigillo/appliance.Version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test check bench bench-baseline fuzz clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) .

run: build
	./$(BIN) serve

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

test: check
	$(GO) test -race -timeout 15m ./...

# bench: `sigillo bench` against a fresh Sigillo (testdata/bench/sigillo.sh),
# then the Go benchmarks of the root package (bench_*_test.go: among them
# the three-node cluster's SMTP rate, commit latency, memory and failover,
# and the backup and restore of 100,000 messages).
bench:
	GO=$(GO) bash testdata/bench/sigillo.sh
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m .
	$(GO) test -run '^$$' -bench BenchmarkSearch100k -benchtime 1x -timeout 30m ./appliance/imapd/

# bench-baseline: the same load against a private Postfix + Dovecot and
# against Sigillo, side by side (root; installs postfix and dovecot if missing).
bench-baseline:
	GO=$(GO) bash testdata/bench/baseline.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./storage/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./appliance/bytesize/
	$(GO) test -run '^$$' -fuzz FuzzCommandLine -fuzztime 30s ./appliance/pop3d/
	$(GO) test -run '^$$' -fuzz FuzzHeaderPolicy -fuzztime 30s ./appliance/smtpd/
	$(GO) test -run '^$$' -fuzz FuzzRendering -fuzztime 30s ./appliance/imapd/
	$(GO) test -run '^$$' -fuzz FuzzExtract -fuzztime 30s ./storage/mailtext/
	$(GO) test -run '^$$' -fuzz FuzzCommandLine -fuzztime 30s ./appliance/imapd/
	$(GO) test -run '^$$' -fuzz FuzzVerifyMIME -fuzztime 30s ./appliance/signer/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime 30s ./appliance/pecverify/
	$(GO) test -run '^$$' -fuzz FuzzParseDaticert -fuzztime 30s ./appliance/pecverify/
	$(GO) test -run '^$$' -fuzz FuzzParseLDIF -fuzztime 30s ./appliance/pecdir/
	$(GO) test -run '^$$' -fuzz FuzzVerifyChain -fuzztime 30s ./storage/peclog/
	$(GO) test -run '^$$' -fuzz FuzzTransform -fuzztime 30s ./appliance/pecbreve/
	$(GO) test -run '^$$' -fuzz FuzzOriginal -fuzztime 30s ./appliance/pec/
	$(GO) test -run '^$$' -fuzz FuzzReceive -fuzztime 30s ./appliance/pec/
	$(GO) test -run '^$$' -fuzz FuzzSubmit -fuzztime 30s ./appliance/pec/
	$(GO) test -run '^$$' -fuzz FuzzHeaderSection -fuzztime 30s ./appliance/spool/
	$(GO) test -run '^$$' -fuzz FuzzEntryReader -fuzztime 30s ./appliance/backup/archive/
	$(GO) test -run '^$$' -fuzz FuzzReadManifest -fuzztime 30s ./appliance/backup/archive/
	$(GO) test -run '^$$' -fuzz FuzzExtractSecrets -fuzztime 30s ./appliance/backup/restore/
	$(GO) test -run '^$$' -fuzz FuzzOpenURL -fuzztime 30s ./appliance/backup/target/
	$(GO) test -run '^$$' -fuzz FuzzParseCredentials -fuzztime 30s ./appliance/backup/target/

clean:
	rm -rf bin
