package builder

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

func TestCreateAdopting(t *testing.T) {
	transient := gophercloud.ErrUnexpectedResponseCode{Actual: 503}
	reset := syscall.ECONNRESET
	refused := gophercloud.ErrUnexpectedResponseCode{Actual: 400}
	tests := []struct {
		name        string
		creates     []error  // result of each create call; nil: made "new-<n>"
		finds       []string // result of each find call ("" none)
		wantID      string
		wantErr     bool
		wantCreates int
	}{
		{name: "first create", creates: []error{nil}, wantID: "new-1", wantCreates: 1},
		{name: "503 made nothing: create again", creates: []error{transient, nil}, finds: []string{""}, wantID: "new-2", wantCreates: 2},
		{name: "reset after the cloud made it: adopt", creates: []error{reset}, finds: []string{"made-1"}, wantID: "made-1", wantCreates: 1},
		{name: "a 400 is not retried", creates: []error{refused}, wantErr: true, wantCreates: 1},
		{name: "gives up after three", creates: []error{transient, transient, transient}, finds: []string{"", ""}, wantErr: true, wantCreates: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creates, finds := 0, 0
			id, err := createAdoptingWith(context.Background(), slog.New(slog.DiscardHandler), "thing", 0,
				func(context.Context) (string, error) {
					creates++
					if err := tt.creates[creates-1]; err != nil {
						return "", err
					}
					return "new-" + string(rune('0'+creates)), nil
				},
				func(context.Context) (string, error) {
					finds++
					return tt.finds[finds-1], nil
				})
			if (err != nil) != tt.wantErr || id != tt.wantID || creates != tt.wantCreates {
				t.Fatalf("got id %q err %v after %d creates; want id %q err %v after %d",
					id, err, creates, tt.wantID, tt.wantErr, tt.wantCreates)
			}
		})
	}
}

func TestCreateAdoptingFindFails(t *testing.T) {
	_, err := createAdoptingWith(context.Background(), slog.New(slog.DiscardHandler), "thing", 0,
		func(context.Context) (string, error) { return "", syscall.ECONNRESET },
		func(context.Context) (string, error) { return "", errors.New("list refused") })
	if !errors.Is(err, syscall.ECONNRESET) || err == nil {
		t.Fatalf("err = %v, want the create's error with the lookup's", err)
	}
}
