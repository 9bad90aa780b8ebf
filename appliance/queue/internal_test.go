package queue

import (
	"testing"
	"time"
)

func TestStripReturnPathRemovesOnlyTheLeadingFields(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Return-Path: <a@b>\r\nReceived: x\r\n\r\nbody", "Received: x\r\n\r\nbody"},
		{"return-path: <a@b>\r\n\t<folded>\r\nRETURN-PATH: <>\r\nSubject: s\r\n\r\nReturn-Path: in body\r\n", "Subject: s\r\n\r\nReturn-Path: in body\r\n"},
		{"Received: x\r\nReturn-Path: <kept>\r\n\r\n", "Received: x\r\nReturn-Path: <kept>\r\n\r\n"},
		{"Return-Paths: <not the field>\r\n\r\n", "Return-Paths: <not the field>\r\n\r\n"},
		{"", ""},
	} {
		if got := string(stripReturnPath([]byte(tc.in))); got != tc.want {
			t.Errorf("stripReturnPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReplyStatus(t *testing.T) {
	for _, tc := range []struct {
		rp   reply
		want string
	}{
		{reply{550, "5.1.1 no such user"}, "5.1.1"},
		{reply{550, "no such user"}, "5.0.0"},
		{reply{451, "4.3.0 try later"}, "4.3.0"},
		{reply{451, "5.1.1 class mismatch"}, "4.0.0"},
		{reply{421, ""}, "4.0.0"},
		{reply{250, "2.0.0 Ok"}, "2.0.0"},
	} {
		if got := tc.rp.status(); got != tc.want {
			t.Errorf("%v.status() = %s, want %s", tc.rp, got, tc.want)
		}
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	prev := time.Duration(0)
	for n := 0; n < 20; n++ {
		d := Backoff(n)
		if d < prev {
			t.Fatalf("Backoff(%d) = %v < %v", n, d, prev)
		}
		prev = d
	}
	if Backoff(1) != time.Minute || Backoff(100) != 4*time.Hour {
		t.Fatalf("Backoff(1) = %v, Backoff(100) = %v", Backoff(1), Backoff(100))
	}
}
