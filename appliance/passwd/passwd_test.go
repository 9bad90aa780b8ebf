package passwd

import "testing"

func TestAHashVerifiesOnlyItsPassword(t *testing.T) {
	h, err := Hash("correct horse", Params{Memory: 1024, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !Verify(h, "correct horse") {
		t.Fatal("right password refused")
	}
	if Verify(h, "correct horsE") {
		t.Fatal("wrong password accepted")
	}
	h2, _ := Hash("correct horse", Params{Memory: 1024, Time: 1, Threads: 1})
	if h == h2 {
		t.Fatal("two hashes share a salt")
	}
	for _, bad := range []string{"", "$argon2id$", "$argon2id$v=19$m=0,t=1,p=1$AAAA$AAAA", "$2a$10$abc", h[:len(h)-3] + "!!!"} {
		if Verify(bad, "correct horse") {
			t.Fatalf("malformed hash %q matched", bad)
		}
	}
}
