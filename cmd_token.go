/*
Copyright 2026 The servicekey-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/servicekey-operator/servicekey-operator/client"
)

// runToken prints an access token obtained with a key file.
func runToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "path to key.json (required)")
	scopes := fs.String("scope", "", "comma- or space-separated scopes; default: the key's scopes")
	tokenURL := fs.String("token-url", "", "token endpoint to use instead of the key file's token_uri")
	asJSON := fs.Bool("json", false, "print access_token, token_type, expiry and scope as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if *keyFile == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "token: --key-file is required and no arguments are taken")
		return exitUsage
	}
	src, err := client.NewTokenSource(client.Options{KeyFile: *keyFile, TokenURL: *tokenURL,
		Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || r == ' ' })})
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	tok, err := src.Token()
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	if !*asJSON {
		fmt.Fprintln(stdout, tok.AccessToken)
		return 0
	}
	scope, _ := tok.Extra("scope").(string)
	_ = json.NewEncoder(stdout).Encode(map[string]string{"access_token": tok.AccessToken, "token_type": tok.TokenType,
		"expiry": tok.Expiry.UTC().Format(time.RFC3339), "scope": scope})
	return 0
}
